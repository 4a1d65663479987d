/**
 * The agent's Prometheus endpoint: 0.0.0.0:15020 in the agent's (node) netns, `/metrics` and
 * Istio's `/stats/prometheus` (what Istio's scrape annotations point at). One registry per agent:
 * Istio TCP metrics from the connection tracker plus the process metrics (CPU, memory, file
 * descriptors, heap, event loop; process-metrics.ts).
 */
import { createLiteServer, type LiteServer } from '../../shared/http-lite.ts';
import { PORTS } from '../../api/constants.ts';
import { AmbitError, errorMessage } from '../../shared/errors.ts';
import { logger } from '../../shared/log.ts';
import type { StateView } from '../state/store.ts';
import type { ConnectionTracker } from '../proxy/connections.ts';
import { registerProcessMetrics } from './process-metrics.ts';
import { Registry } from './prometheus.ts';
import { TcpMetrics } from './tcp-metrics.ts';

const log = logger('metrics');
const PATHS = new Set(['/metrics', '/stats/prometheus']);

export interface AgentMetricsOptions {
  connections: ConnectionTracker;
  state: StateView;
  host?: string;
  port?: number;
  /** Cluster id for the *_cluster labels (default Kubernetes, as Istio). */
  cluster?: string;
  maxLabelSets?: number;
  /** Process metrics (default true; tests running several agents in one process turn them off). */
  processMetrics?: boolean;
}

export interface AgentMetrics {
  readonly registry: Registry;
  readonly tcp: TcpMetrics;
  /** `host:port` it listens on. */
  readonly address: string;
  /** The exposition text, byte counts of open connections included. */
  render(): Promise<string>;
  close(): Promise<void>;
}

export async function startAgentMetrics(o: AgentMetricsOptions): Promise<AgentMetrics> {
  const registry = new Registry();
  if (o.processMetrics ?? true) registerProcessMetrics(registry);
  const tcp = new TcpMetrics({ registry, state: o.state, cluster: o.cluster, maxLabelSets: o.maxLabelSets });
  const detach = tcp.attach(o.connections);
  const render = async (): Promise<string> => {
    tcp.sync();
    return registry.metrics();
  };
  const server: LiteServer = createLiteServer((req) => {
    if (req.method !== 'GET' || !PATHS.has(req.path)) {
      return { status: 404, headers: { 'content-type': 'text/plain' }, body: 'metrics are on /metrics\n' };
    }
    return render().then(
      (text) => ({ status: 200, headers: { 'content-type': registry.contentType }, body: text }),
      (err: unknown) => {
        log.error('cannot render metrics', { error: errorMessage(err) });
        return { status: 500, headers: { 'content-type': 'text/plain' }, body: `${errorMessage(err)}\n` };
      },
    );
  }, { name: 'metrics' });
  const host = o.host ?? '0.0.0.0';
  const port = o.port ?? PORTS.metrics;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new AmbitError('ZT_METRICS_LISTEN', `cannot listen for metrics on ${host}:${port}: ${errorMessage(err)}; is another agent running in this netns?`, { cause: err })));
    server.listen(port, host, () => resolve());
  });
  const a = server.address();
  const address = a && typeof a === 'object' ? `${a.address}:${a.port}` : `${host}:${port}`;
  return {
    registry,
    tcp,
    address,
    render,
    close: () => new Promise<void>((resolve) => {
      detach();
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
