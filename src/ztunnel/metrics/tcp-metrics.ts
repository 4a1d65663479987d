/**
 * Istio's L4 metrics, fed by the ConnectionTracker: opened at open, closed (and failed, for refused
 * or unreachable attempts) at close, and the byte counters brought up to date at close AND at
 * every scrape (sync()), so a long-lived connection shows its bytes while it is still open.
 *
 * Direction of the byte counters, as Istio defines them for both reporters: received = bytes of the
 * request direction (client -> server, the record's bytesSent), sent = bytes of the response
 * direction (server -> client, the record's bytesReceived).
 */
import { Counter, Gauge, type Registry } from './prometheus.ts';
import { logger } from '../../shared/log.ts';
import type { StateView } from '../state/store.ts';
import type { ClosedConnection, ConnectionInfo, ConnectionTracker } from '../proxy/connections.ts';
import { responseFlags, tcpLabels, TCP_LABEL_NAMES, type TcpLabels } from './labels.ts';
import { SeriesCap } from './series-cap.ts';

const log = logger('metrics');

const LABELS = [...TCP_LABEL_NAMES, 'response_flags'] as const;
type Label = (typeof LABELS)[number];
type Labels = Record<Label, string>;

export interface TcpMetricsOptions {
  registry: Registry;
  state: StateView;
  cluster?: string;
  /** Label sets with their own series (default 2000); see series-cap.ts for what happens beyond. */
  maxLabelSets?: number;
}

interface Tracked {
  labels: Labels;
  /** Bytes already counted (request direction, response direction). */
  request: number;
  response: number;
}

export class TcpMetrics {
  readonly #state: StateView;
  readonly #cluster: string | undefined;
  readonly #cap: SeriesCap;
  readonly #open = new Map<number, Tracked>();
  readonly #opened: Counter<Label>;
  readonly #closed: Counter<Label>;
  readonly #failed: Counter<Label>;
  readonly #received: Counter<Label>;
  readonly #sent: Counter<Label>;
  readonly #overflow: Counter;
  #tracker: ConnectionTracker | undefined;

  constructor(o: TcpMetricsOptions) {
    this.#state = o.state;
    this.#cluster = o.cluster;
    this.#cap = new SeriesCap(o.maxLabelSets, () =>
      log.warn('metric label sets reached the cap; new ones are counted under labels "overflow"', { cap: this.#cap.max }));
    const registry = o.registry;
    const counter = (name: string, help: string) => new Counter({ name, help, labelNames: LABELS, registry });
    this.#opened = counter('istio_tcp_connections_opened_total', 'TCP connections opened (every attempt the agent took, refused ones included).');
    this.#closed = counter('istio_tcp_connections_closed_total', 'TCP connections closed; response_flags says how (- ok, DENY by policy, CONNECT could not reach the destination).');
    this.#failed = counter('istio_tcp_connections_failed_total', 'TCP connections that failed: denied by policy (DENY) or never connected to their destination (CONNECT).');
    this.#received = counter('istio_tcp_received_bytes_total', 'Bytes of the request direction (client to server).');
    this.#sent = counter('istio_tcp_sent_bytes_total', 'Bytes of the response direction (server to client).');
    this.#overflow = new Counter({ name: 'ambit_metrics_overflow_connections_total', help: 'Connections counted under the "overflow" label set because the label-set cap was reached.', registry });
    const cap = this.#cap;
    const open = this.#open;
    new Gauge({ name: 'ambit_metrics_label_sets', help: 'TCP metric label sets with their own series.', registry, collect: (g) => g.set(cap.size) });
    new Gauge({ name: 'ambit_agent_connections_open', help: 'Connections the agent proxies right now.', registry, collect: (g) => g.set(open.size) });
  }

  /** Follow a tracker's connections. Returns a function that stops following. */
  attach(tracker: ConnectionTracker): () => void {
    const onOpen = (c: ConnectionInfo): void => this.#onOpen(c);
    const onClose = (c: ClosedConnection): void => this.#onClose(c);
    tracker.on('open', onOpen);
    tracker.on('close', onClose);
    this.#tracker = tracker;
    return () => {
      tracker.off('open', onOpen);
      tracker.off('close', onClose);
      if (this.#tracker === tracker) this.#tracker = undefined;
    };
  }

  /** Count the bytes open connections carried since the last count (call before a scrape). */
  sync(): void {
    if (!this.#tracker || this.#open.size === 0) return;
    for (const c of this.#tracker.list()) {
      const t = this.#open.get(c.id);
      if (t) this.#countBytes(t, c);
    }
  }

  #labels(c: ConnectionInfo): Labels {
    const own = tcpLabels(c, this.#state, { cluster: this.#cluster });
    const base: TcpLabels = this.#cap.admit(own);
    if (base !== own) this.#overflow.inc();
    return { ...base, response_flags: '-' };
  }

  #onOpen(c: ConnectionInfo): void {
    const t: Tracked = { labels: this.#labels(c), request: 0, response: 0 };
    this.#open.set(c.id, t);
    this.#opened.inc(t.labels);
  }

  #onClose(c: ClosedConnection): void {
    let t = this.#open.get(c.id);
    if (t) this.#open.delete(c.id);
    else {
      // Opened before we attached: count it now so closed never exceeds what we can explain.
      t = { labels: this.#labels(c), request: 0, response: 0 };
      this.#opened.inc(t.labels);
    }
    this.#countBytes(t, c);
    const flags = responseFlags(c);
    const labels = { ...t.labels, response_flags: flags };
    this.#closed.inc(labels);
    if (flags !== '-') this.#failed.inc(labels);
  }

  #countBytes(t: Tracked, c: ConnectionInfo): void {
    const request = c.bytesSent - t.request;
    const response = c.bytesReceived - t.response;
    // The series exist from the first count, zero included (a dashboard sees the pair).
    if (request >= 0) this.#received.inc(t.labels, request);
    if (response >= 0) this.#sent.inc(t.labels, response);
    t.request = Math.max(t.request, c.bytesSent);
    t.response = Math.max(t.response, c.bytesReceived);
  }
}
