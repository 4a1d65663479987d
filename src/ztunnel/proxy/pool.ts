/**
 * HbonePool: HTTP/2-over-mTLS sessions to peers' :15008, shared by the CONNECT streams of many
 * proxied connections. A session is keyed by (source pod, source identity + certificate serial,
 * destination identity, HBONE address): the tunnel leaves from the source pod's netns (its IP,
 * mark 0x539), and a session made with a rotated certificate takes no new streams (it drains).
 * Up to 100 concurrent streams per session, then another session; idle sessions close after 5 min;
 * a PING every 10 s notices dead peers.
 */
import * as tls from 'node:tls';
import type { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { AmbitError, errorMessage } from '../../shared/errors.ts';
import { logger } from '../../shared/log.ts';
import { hboneClientOptions, verifyHboneServer } from '../../shared/tls.ts';
import type { TlsCredentials } from '../../shared/tls.ts';
import type { Workload } from '../../api/mesh.ts';
import { H2Session } from '../h2/session.ts';
import { E_CANCEL } from '../h2/frames.ts';
import { connectionWindow, h2Settings, HBONE_H2, H2_MAX_SESSION_MEMORY, H2_MAX_STREAMS, leanSessionOptions } from './h2-settings.ts';
import { formatAddr, parseAddr } from './types.ts';
import type { Addr, HboneRoute, LocalPod, PodSockets } from './types.ts';

const log = logger('pool');

/** What the pool needs of a workload certificate (identity Credentials is a superset). */
export type PoolCredentials = TlsCredentials & { identity: string; serial: string };

/** The source side of a tunnel: which pod (netns, IP), how to make sockets there, its workload facts. */
export interface HboneSource {
  pod: LocalPod;
  sockets: PodSockets;
  /** For the baggage header; falls back to the pod's name/namespace. */
  workload?: Workload;
}

export interface HbonePoolOptions {
  maxStreamsPerSession?: number;
  idleTimeoutMs?: number;
  pingIntervalMs?: number;
  /** TCP+TLS+h2 handshake and CONNECT response deadline. */
  connectTimeoutMs?: number;
}

export interface PoolSessionInfo {
  podUid: string;
  srcIdentity: string;
  serial: string;
  dstIdentity: string;
  hboneAddress: string;
  activeStreams: number;
  draining: boolean;
}

/** What the pool uses of a client session: node's ClientHttp2Session and the lean H2Session both fit. */
interface ClientSession extends EventEmitter {
  request(headers: Record<string, string>, options: { endStream: boolean }): ClientStream;
  ping(cb: (err: Error | null) => void): boolean;
  close(): void;
  destroy(): void;
  setLocalWindowSize(size: number): void;
  readonly closed: boolean;
  readonly destroyed: boolean;
  readonly remoteSettings?: { maxConcurrentStreams?: number };
}

type ClientStream = Duplex & { close(code?: number): void; readonly rstCode?: number };

interface Entry {
  group: string;
  info: PoolSessionInfo;
  ready: Promise<ClientSession>;
  session?: ClientSession;
  closed: boolean;
  idle?: NodeJS.Timeout;
  ping?: NodeJS.Timeout;
}

export class HbonePool {
  #max: number;
  #idleMs: number;
  #pingMs: number;
  #timeoutMs: number;
  /** group (pod|src identity|dst identity|hbone address) -> sessions */
  #groups = new Map<string, Entry[]>();
  #closed = false;

  constructor(o: HbonePoolOptions = {}) {
    this.#max = o.maxStreamsPerSession ?? H2_MAX_STREAMS;
    this.#idleMs = o.idleTimeoutMs ?? 5 * 60_000;
    this.#pingMs = o.pingIntervalMs ?? 10_000;
    this.#timeoutMs = o.connectTimeoutMs ?? 10_000;
  }

  /**
   * Opens a CONNECT stream to `route.target` through `route.hboneAddress`. Resolves with the stream
   * (a Duplex carrying the tunnelled bytes) once the peer answered 200; rejects with AmbitError
   * ZT_HBONE_<status> for another status, ZT_HBONE_CONNECT when the tunnel could not be set up.
   */
  async open(route: HboneRoute, src: HboneSource, creds: PoolCredentials, clientAddr: Addr): Promise<Duplex> {
    const headers = {
      ':method': 'CONNECT',
      ':authority': route.target,
      forwarded: `for="${formatAddr(clientAddr.address, clientAddr.port)}"`,
      baggage: baggage(src),
    };
    // A pooled session can turn out dead (GOAWAY, peer restarted) right when we use it: one retry
    // on a fresh session hides that from the app.
    for (let attempt = 0; ; attempt++) {
      if (this.#closed) throw new AmbitError('ZT_POOL_CLOSED', 'the HBONE pool is shut down (agent stopping)');
      const entry = this.#reserve(route, src, creds);
      let stream: ClientStream;
      try {
        const session = await entry.ready;
        stream = session.request(headers, { endStream: false });
      } catch (err) {
        this.#release(entry);
        if (entry.session && attempt === 0 && !(err instanceof AmbitError)) {
          this.#drain(entry);
          continue;
        }
        if (err instanceof AmbitError) throw err;
        throw new AmbitError('ZT_HBONE_CONNECT', `CONNECT ${route.target} via ${route.hboneAddress} failed: ${errorMessage(err)}`, { cause: err });
      }
      stream.once('close', () => this.#release(entry));
      return await awaitResponse(stream, route, this.#timeoutMs);
    }
  }

  /** Sessions (for the admin API and tests). */
  sessions(): PoolSessionInfo[] {
    return [...this.#groups.values()].flat().map((e) => ({ ...e.info }));
  }

  /** Drops a pod's sessions (pod deleted: its netns and certificate go away). */
  closePod(podUid: string): void {
    for (const list of this.#groups.values()) for (const e of [...list]) if (e.info.podUid === podUid) this.#destroy(e);
  }

  /** Gracefully closes every session (streams in flight finish), refuses new opens. */
  close(): void {
    this.#closed = true;
    for (const list of this.#groups.values()) for (const e of [...list]) this.#drain(e);
  }

  #reserve(route: HboneRoute, src: HboneSource, creds: PoolCredentials): Entry {
    const group = `${src.pod.uid}|${creds.identity}|${route.dstIdentity}|${route.hboneAddress}`;
    const list = this.#groups.get(group) ?? [];
    this.#groups.set(group, list);
    let chosen: Entry | undefined;
    for (const e of [...list]) {
      if (e.info.serial !== creds.serial) this.#drain(e); // source certificate rotated
      else if (!chosen && !e.info.draining && !e.closed && e.info.activeStreams < this.#limit(e)) chosen = e;
    }
    if (!chosen) {
      chosen = this.#create(group, route, src, creds);
      list.push(chosen);
    }
    chosen.info.activeStreams++;
    if (chosen.idle) clearTimeout(chosen.idle);
    chosen.idle = undefined;
    return chosen;
  }

  #limit(e: Entry): number {
    const remote = e.session?.remoteSettings?.maxConcurrentStreams;
    return remote && remote < this.#max ? remote : this.#max;
  }

  #release(e: Entry): void {
    e.info.activeStreams--;
    if (e.info.activeStreams > 0 || e.closed) return;
    if (e.info.draining) return this.#destroy(e);
    e.idle = setTimeout(() => this.#drain(e), this.#idleMs);
    e.idle.unref();
  }

  #create(group: string, route: HboneRoute, src: HboneSource, creds: PoolCredentials): Entry {
    const e: Entry = {
      group,
      closed: false,
      info: {
        podUid: src.pod.uid,
        srcIdentity: creds.identity,
        serial: creds.serial,
        dstIdentity: route.dstIdentity,
        hboneAddress: route.hboneAddress,
        activeStreams: 0,
        draining: false,
      },
      ready: undefined as unknown as Promise<ClientSession>,
    };
    e.ready = this.#connect(route, src, creds).then(
      (session) => {
        e.session = session;
        if (e.closed) {
          // dropped (pod gone, pool closed) while connecting
          session.destroy();
          throw new AmbitError('ZT_HBONE_CONNECT', `HBONE session to ${route.hboneAddress} was dropped while connecting (pod removed or agent stopping)`);
        }
        session.once('close', () => this.#forget(e));
        session.on('error', (err) => log.debug('session error', { hbone: route.hboneAddress, error: errorMessage(err) }));
        session.on('goaway', () => this.#drain(e));
        let unanswered = 0;
        e.ping = setInterval(() => {
          if (session.closed || session.destroyed) return;
          // Two keepalives in a row without an answer: the peer or the path is gone.
          if (unanswered >= 2) {
            log.warn('HBONE peer stopped answering PINGs, closing session', { hbone: route.hboneAddress });
            session.destroy();
            return;
          }
          unanswered++;
          session.ping((err) => {
            if (!err) unanswered = 0;
          });
        }, this.#pingMs);
        e.ping.unref();
        return session;
      },
      (err) => {
        this.#forget(e);
        throw err;
      },
    );
    e.ready.catch(() => {}); // awaited by open(); this avoids an unhandled rejection if nobody waits
    return e;
  }

  async #connect(route: HboneRoute, src: HboneSource, creds: PoolCredentials): Promise<ClientSession> {
    const addr = parseAddr(route.hboneAddress);
    if (!addr) throw new AmbitError('ZT_BAD_ROUTE', `HBONE address ${route.hboneAddress} is not ip:port`);
    const fail = (what: string, err: unknown): AmbitError =>
      new AmbitError(
        'ZT_HBONE_CONNECT',
        `HBONE ${what} to ${route.hboneAddress} (${route.dstIdentity}) from pod ${src.pod.namespace}/${src.pod.name} failed: ` +
          `${errorMessage(err)}; check that the destination node agent runs and the pod is enrolled`,
        { cause: err },
      );
    let tcp;
    try {
      tcp = await src.sockets.connect(addr.address, addr.port, { timeoutMs: this.#timeoutMs });
    } catch (err) {
      throw fail('TCP connect', err);
    }
    tcp.setNoDelay(true);
    // Verified by verifyHboneServer below rather than by node, which would reject without the
    // certificate at hand: the reason then names notAfter / the unknown issuer / the identity.
    const sock = tls.connect({ ...hboneClientOptions(creds, route.dstIdentity), rejectUnauthorized: false, socket: tcp });
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`handshake timed out after ${this.#timeoutMs} ms`)), this.#timeoutMs);
        sock.once('secureConnect', () => { clearTimeout(timer); resolve(); });
        sock.once('error', (err) => { clearTimeout(timer); reject(err); });
      });
      const refused = verifyHboneServer(sock, route.dstIdentity);
      if (refused) {
        log.warn('refusing HBONE server', { hbone: route.hboneAddress, expected: route.dstIdentity, reason: refused });
        throw new Error(`server certificate refused: ${refused}`);
      }
      if (sock.alpnProtocol !== 'h2') throw new Error(`peer did not negotiate ALPN h2 (got ${String(sock.alpnProtocol)})`);
    } catch (err) {
      sock.destroy();
      tcp.destroy();
      throw fail('TLS handshake', err);
    }
    // lean: ready once the peer's SETTINGS arrived (its stream limit is known before the first stream)
    const session: ClientSession =
      HBONE_H2 === 'lean'
        ? new H2Session(sock, true, leanSessionOptions())
        // node:http2 is loaded only in this comparison mode (its RSS is not paid by the lean agent).
        : (process.getBuiltinModule('node:http2').connect(`https://${route.hboneAddress}`, {
            createConnection: () => sock,
            settings: h2Settings(),
            maxSessionMemory: H2_MAX_SESSION_MEMORY,
          }) as unknown as ClientSession);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no HTTP/2 SETTINGS within ${this.#timeoutMs} ms`)), this.#timeoutMs);
      session.once(HBONE_H2 === 'lean' ? 'remoteSettings' : 'connect', () => { clearTimeout(timer); resolve(); });
      session.once('error', (err) => { clearTimeout(timer); reject(err); });
      session.once('close', () => { clearTimeout(timer); reject(new Error('peer closed the connection (did it refuse our certificate?)')); });
    }).catch((err) => {
      session.destroy();
      throw fail('HTTP/2 setup', err);
    });
    session.setLocalWindowSize(connectionWindow());
    log.debug('HBONE session open', { hbone: route.hboneAddress, src: creds.identity, dst: route.dstIdentity });
    return session;
  }

  #drain(e: Entry): void {
    if (e.closed) return;
    e.info.draining = true;
    if (e.info.activeStreams <= 0) this.#destroy(e);
  }

  #destroy(e: Entry): void {
    if (!e.closed) {
      e.closed = true;
      // close(): no new streams, the ones in flight finish; destroy once it is empty anyway.
      if (e.session && !e.session.closed) e.session.close();
      if (e.info.activeStreams > 0 && e.session) e.session.destroy();
    }
    this.#forget(e);
  }

  #forget(e: Entry): void {
    e.closed = true;
    if (e.idle) clearTimeout(e.idle);
    if (e.ping) clearInterval(e.ping);
    const list = this.#groups.get(e.group);
    if (!list) return;
    const i = list.indexOf(e);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.#groups.delete(e.group);
  }
}

function awaitResponse(stream: ClientStream, route: HboneRoute, timeoutMs: number): Promise<Duplex> {
  return new Promise<Duplex>((resolve, reject) => {
    const timer = setTimeout(() => {
      stream.close(E_CANCEL);
      reject(new AmbitError('ZT_HBONE_TIMEOUT', `no response to CONNECT ${route.target} via ${route.hboneAddress} within ${timeoutMs} ms`));
    }, timeoutMs);
    const onError = (err: Error): void => {
      clearTimeout(timer);
      reject(new AmbitError('ZT_HBONE_CONNECT', `CONNECT ${route.target} via ${route.hboneAddress} failed: ${err.message}`, { cause: err }));
    };
    const onClose = (): void => onError(new Error(`stream closed before a response (rst code ${stream.rstCode})`));
    stream.once('error', onError);
    stream.once('close', onClose);
    stream.once('response', (headers: Record<string, string | string[] | undefined>) => {
      clearTimeout(timer);
      stream.removeListener('error', onError);
      stream.removeListener('close', onClose);
      // Until the caller attaches its own handlers (pipeBoth), an error must not crash the process.
      stream.on('error', () => {});
      const status = Number(headers[':status']);
      if (status === 200) return resolve(stream);
      stream.close(E_CANCEL);
      stream.resume();
      reject(
        new AmbitError(`ZT_HBONE_${status}`, `peer ${route.hboneAddress} answered ${status} to CONNECT ${route.target} (${statusText(status)})`, {
          details: { status },
        }),
      );
    });
  });
}

function statusText(status: number): string {
  if (status === 400) return 'bad request: the target is not one of that pod\'s addresses';
  if (status === 401) return 'denied by authorization policy';
  if (status === 503) return 'the destination app did not accept the connection';
  return 'unexpected status';
}

function baggage(src: HboneSource): string {
  const w = src.workload;
  const parts = [
    `k8s.namespace.name=${w?.namespace ?? src.pod.namespace}`,
    `k8s.pod.name=${w?.name ?? src.pod.name}`,
    `service.name=${w?.canonicalName || w?.name || src.pod.name}`,
    `service.version=${w?.canonicalRevision || 'latest'}`,
  ];
  return parts.join(',');
}
