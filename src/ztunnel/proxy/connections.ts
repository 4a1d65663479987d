/**
 * ConnectionTracker: one record per proxied connection, opened once and closed exactly once.
 * Metrics and the admin API hook in through the 'open'/'close' events and list(); the access log
 * ("connection complete", one line per connection) is written here at close.
 */
import { EventEmitter } from 'node:events';
import { logEnabled, logger } from '../../shared/log.ts';

export type Direction = 'inbound' | 'outbound';

export interface ConnectionFields {
  direction: Direction;
  /** uid of the local pod the agent proxies for (source pod for outbound, destination for inbound). */
  podUid: string;
  /** `ip:port` of the client. */
  src: string;
  /** `ip:port` of the target the bytes are delivered to. */
  dst: string;
  /** `ip:port` of the HBONE endpoint (outbound over HBONE) or our 15008 (inbound over HBONE). */
  hboneAddr?: string;
  srcIdentity?: string;
  dstIdentity?: string;
  /** `namespace/name` */
  srcWorkload?: string;
  dstWorkload?: string;
  /** service hostname, when the destination was a service */
  service?: string;
  /** HBONE (mTLS tunnel) or TCP (passthrough / plaintext inbound). */
  protocol: 'HBONE' | 'TCP';
  /** Name of the policy that allowed an inbound connection, when one did. */
  policy?: string;
}

export interface ConnectionInfo extends ConnectionFields {
  id: number;
  startedAt: Date;
  /** Bytes carried from src toward dst. */
  bytesSent: number;
  /** Bytes carried from dst back to src. */
  bytesReceived: number;
}

export interface ClosedConnection extends ConnectionInfo {
  durationMs: number;
  /** Why the connection failed, if it did (an AmbitError code or message). */
  error?: string;
  /** Bytes were set to flow (the two sides were joined); false for refused/failed attempts. */
  established: boolean;
}

export class ConnectionRecord {
  readonly info: ConnectionInfo;
  #tracker: ConnectionTracker;
  #closed = false;
  #started = performance.now();
  #destroy: (() => void) | undefined;
  #established = false;
  #source: (() => { sent: number; received: number }) | undefined;

  constructor(tracker: ConnectionTracker, info: ConnectionInfo) {
    this.#tracker = tracker;
    this.info = info;
  }

  get closed(): boolean { return this.#closed; }

  /** Fill in what was learned after open (peer identity, chosen workload, policy). */
  set(fields: Partial<ConnectionFields>): void {
    for (const [k, v] of Object.entries(fields)) if (v !== undefined) (this.info as unknown as Record<string, unknown>)[k] = v;
  }

  /** How to tear the connection down (PodProxy.stop after the drain period). */
  onDestroy(fn: () => void): void { this.#destroy = fn; }
  destroy(): void { this.#destroy?.(); }

  addSent(n: number): void { this.#established = true; this.info.bytesSent += n; }
  addReceived(n: number): void { this.#established = true; this.info.bytesReceived += n; }

  /**
   * Take byte counts from a live source (a socket's own counters) instead of addSent/addReceived:
   * no per-chunk work on the data path; read when listed and at close.
   */
  countFrom(source: () => { sent: number; received: number }): void {
    this.#established = true;
    this.#source = source;
  }

  /** Brings info.bytesSent/bytesReceived up to date (list() and close() call it). */
  refresh(): ConnectionInfo {
    if (this.#source && !this.#closed) {
      const { sent, received } = this.#source();
      this.info.bytesSent = sent;
      this.info.bytesReceived = received;
    }
    return this.info;
  }

  /** Idempotent: only the first call counts. */
  close(error?: unknown): void {
    if (this.#closed) return;
    this.refresh();
    this.#closed = true;
    const closed: ClosedConnection = {
      ...this.info,
      durationMs: Math.round((performance.now() - this.#started) * 1000) / 1000,
      error: error === undefined || error === null ? undefined : describe(error),
      established: this.#established,
    };
    this.#tracker._closed(closed);
  }
}

function describe(err: unknown): string {
  if (typeof err === 'string') return err;
  if (err && typeof err === 'object') {
    const e = err as { code?: unknown; message?: unknown };
    if (typeof e.code === 'string' && typeof e.message === 'string') return `${e.code}: ${e.message}`;
    if (typeof e.message === 'string') return e.message;
  }
  return String(err);
}

const ACCESS = 'access';
const access = logger(ACCESS);

/** `ns/name` -> [ns, name]; the access log shows them as separate fields, as Istio's does. */
function splitName(v: string | undefined): [string | undefined, string | undefined] {
  if (!v) return [undefined, undefined];
  const i = v.indexOf('/');
  return i < 0 ? [undefined, v] : [v.slice(0, i), v.slice(i + 1)];
}

/**
 * The access-log record of one closed connection (or refused attempt): Istio ztunnel's field names,
 * plus namespaces, protocol, deciding policy and the error. Undefined fields are left out.
 */
export function accessRecord(c: ClosedConnection): Record<string, unknown> {
  const [srcNs, srcName] = splitName(c.srcWorkload);
  const [dstNs, dstName] = splitName(c.dstWorkload);
  return {
    'src.addr': c.src,
    'src.workload': srcName,
    'src.namespace': srcNs,
    'src.identity': c.srcIdentity,
    'dst.addr': c.dst,
    'dst.hbone_addr': c.hboneAddr,
    'dst.service': c.service,
    'dst.workload': dstName,
    'dst.namespace': dstNs,
    'dst.identity': c.dstIdentity,
    direction: c.direction,
    protocol: c.protocol,
    policy: c.policy,
    bytes_sent: c.bytesSent,
    bytes_recv: c.bytesReceived,
    duration: `${Math.round(c.durationMs)}ms`,
    error: c.error,
  };
}

export interface ConnectionTrackerEvents {
  open: [ConnectionInfo];
  close: [ClosedConnection];
}

export class ConnectionTracker extends EventEmitter<ConnectionTrackerEvents> {
  #open = new Map<number, ConnectionRecord>();
  #nextId = 1;
  #accessLog: boolean;

  constructor(o: { accessLog?: boolean } = {}) {
    super();
    this.#accessLog = o.accessLog ?? true;
  }

  open(fields: ConnectionFields): ConnectionRecord {
    const rec = new ConnectionRecord(this, { ...fields, id: this.#nextId++, startedAt: new Date(), bytesSent: 0, bytesReceived: 0 });
    this.#open.set(rec.info.id, rec);
    this.emit('open', rec.info);
    return rec;
  }

  /** Open connections (snapshots). */
  list(): ConnectionInfo[] {
    return [...this.#open.values()].map((r) => ({ ...r.refresh() }));
  }

  /** Open connection records of one local pod (PodProxy.stop drains them). */
  recordsOf(podUid: string): ConnectionRecord[] {
    return [...this.#open.values()].filter((r) => r.info.podUid === podUid);
  }

  get size(): number { return this.#open.size; }

  /** @internal called by ConnectionRecord.close */
  _closed(c: ClosedConnection): void {
    this.#open.delete(c.id);
    // Failed/refused ones at warn: `access:warn` keeps only those, `access:off` silences all.
    if (this.#accessLog && logEnabled(ACCESS, c.error ? 'warn' : 'info')) {
      (c.error ? access.warn : access.info)('connection complete', accessRecord(c));
    }
    this.emit('close', c);
  }
}
