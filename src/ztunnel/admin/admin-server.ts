/**
 * The agent's admin API (loopback only, 127.0.0.1:15000 as ztunnel): GET /config_dump,
 * GET|POST /logging, GET /explain?src=NS/POD&dst=IP:PORT, GET /memory. Read-only except the log level, and
 * never on the data path: a failing request answers an error and changes nothing.
 */
import { isIP } from 'node:net';
import { createLiteServer, type LiteRequest, type LiteResponse, type LiteServer } from '../../shared/http-lite.ts';
import { PORTS } from '../../api/constants.ts';
import { AmbitError, errorMessage, isAmbitError } from '../../shared/errors.ts';
import { logger } from '../../shared/log.ts';
import { parseAddr } from '../proxy/types.ts';
import { buildConfigDump, type DumpSources } from './config-dump.ts';
import { explainConnection } from './explain.ts';
import { loggingState, setLogging } from './logging.ts';
import { memoryReport } from './memory.ts';

const log = logger('agent.admin');

export interface AdminServerOptions extends DumpSources {
  host?: string;
  port?: number;
}

const INDEX = `ambit node agent admin API
  GET  /config_dump                      workloads, services, policies, certificates, connections, pods
  GET  /logging                          current log levels
  POST /logging?level=SPEC               set levels: debug | access:off | info,access:debug
  POST /logging?format=text|json         log line format
  GET  /explain?src=NS/POD&dst=IP:PORT   route and policy decision for a connection
  GET  /memory                           process memory: RSS, V8 heap, external and array buffers
`;

export class AdminServer {
  readonly #opts: AdminServerOptions;
  #server: LiteServer | undefined;

  constructor(opts: AdminServerOptions) {
    this.#opts = opts;
  }

  /** The bound port (tests listen on port 0). */
  get port(): number {
    const a = this.#server?.address();
    return a && typeof a === 'object' ? a.port : 0;
  }

  async start(): Promise<void> {
    const server = createLiteServer((req) => this.#handle(req), { name: 'agent.admin' });
    const host = this.#opts.host ?? '127.0.0.1';
    const port = this.#opts.port ?? PORTS.admin;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(new AmbitError('ZT_ADMIN_LISTEN', `cannot open the admin API on ${host}:${port}: ${errorMessage(err)}; is another agent running in this network namespace?`, { cause: err })));
      server.listen(port, host, () => resolve());
    });
    this.#server = server;
    log.info('admin API listening', { address: `${host}:${this.port}` });
  }

  async close(): Promise<void> {
    const s = this.#server;
    this.#server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  #handle(req: LiteRequest): LiteResponse {
    const url = new URL(req.target, 'http://admin');
    try {
      switch (url.pathname) {
        case '/':
          return text(200, INDEX);
        case '/config_dump':
          onlyMethods(req, ['GET']);
          return json(200, buildConfigDump(this.#opts));
        case '/logging':
          onlyMethods(req, ['GET', 'POST']);
          if (req.method === 'POST') {
            const level = url.searchParams.get('level');
            const format = url.searchParams.get('format');
            if (level === null && format === null) {
              throw new AmbitError('ZT_ADMIN_BAD_REQUEST', 'POST /logging needs ?level=LEVEL (debug, info, warn, error, off; or COMPONENT:LEVEL, comma-separated) or ?format=text|json');
            }
            setLogging({ level, format });
            log.info('logging changed', { level: level ?? undefined, format: format ?? undefined });
          }
          return json(200, loggingState());
        case '/memory':
          onlyMethods(req, ['GET']);
          return json(200, memoryReport());
        case '/explain':
          onlyMethods(req, ['GET']);
          return json(200, this.#explain(url.searchParams));
        default:
          throw new AmbitError('ZT_ADMIN_NOT_FOUND', `no admin endpoint ${url.pathname}; see GET / for the list`);
      }
    } catch (err) {
      const code = isAmbitError(err) ? err.code : 'ZT_ADMIN_INTERNAL';
      const status = code === 'ZT_ADMIN_NOT_FOUND' || code === 'ZT_EXPLAIN_NO_SOURCE' ? 404
        : code === 'ZT_ADMIN_METHOD' ? 405 : isAmbitError(err) ? 400 : 500;
      if (status === 500) log.error('admin request failed', { path: url.pathname, error: errorMessage(err) });
      return json(status, { error: { code, message: errorMessage(err) } });
    }
  }

  #explain(q: URLSearchParams) {
    const src = q.get('src') ?? '';
    const dstText = q.get('dst') ?? '';
    if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?\/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(src)) {
      throw new AmbitError('ZT_ADMIN_BAD_REQUEST', `src must be NAMESPACE/POD, got ${JSON.stringify(src)}`);
    }
    const dst = parseAddr(dstText);
    if (!dst || isIP(dst.address) === 0) throw new AmbitError('ZT_ADMIN_BAD_REQUEST', `dst must be IP:PORT ([IPv6]:PORT), got ${JSON.stringify(dstText)}`);
    return explainConnection(this.#opts.state, {
      node: this.#opts.node,
      source: src,
      destination: dst,
      servedUids: new Set(this.#opts.pods().map((p) => p.uid)),
    });
  }
}

function onlyMethods(req: LiteRequest, methods: string[]): void {
  if (!methods.includes(req.method)) {
    throw new AmbitError('ZT_ADMIN_METHOD', `${req.method} is not allowed here; use ${methods.join(' or ')}`);
  }
}

function json(status: number, body: unknown): LiteResponse {
  return { status, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body, null, 2) + '\n' };
}

function text(status: number, body: string): LiteResponse {
  return { status, headers: { 'content-type': 'text/plain' }, body };
}
