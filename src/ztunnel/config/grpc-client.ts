/**
 * A lean gRPC client channel over Ambit's own HTTP/2 (src/ztunnel/h2), for the agent's calls to the
 * controller; it replaces @grpc/grpc-js there (its module graph and node:http2 cost the agent tens
 * of MB). One TLS connection (ALPN h2, optional client certificate, the server certificate checked
 * against `servername` rather than the dialled address) is opened on first use and shared by all
 * calls; when it is lost the next call opens a new one (callers own their retry policy). A PING
 * every keepaliveMs that is not answered within keepaliveTimeoutMs drops the connection, so a
 * silently dead peer is noticed. Per-call credentials (e.g. a bearer token read from its file) are
 * fetched for every call; if that fails the call ends UNAUTHENTICATED.
 */
import * as tls from 'node:tls';
import { AmbitError, errorMessage } from '../../shared/errors.ts';
import { logger } from '../../shared/log.ts';
import { H2Session } from '../h2/session.ts';
import { GRPC, GrpcCall, grpcError, type GrpcStatus } from './grpc-call.ts';

export { GRPC, GrpcCall, grpcError, grpcStatusName, type GrpcStatus } from './grpc-call.ts';

const log = logger('agent.grpc');

export interface GrpcChannelOptions {
  /** host:port or [v6]:port */
  address: string;
  rootsPem: string;
  certPem?: string;
  keyPem?: string;
  /** The name the server certificate must carry (also sent as SNI). */
  servername: string;
  /** Extra request headers for each call (e.g. authorization); a rejection ends the call UNAUTHENTICATED. */
  callHeaders?: () => Promise<Record<string, string>>;
  /** TCP + TLS + HTTP/2 SETTINGS (default 10 s). */
  connectTimeoutMs?: number;
  /** 0: no keepalive PINGs (default 10 s, answered within 5 s). */
  keepaliveMs?: number;
  keepaliveTimeoutMs?: number;
  /** Largest message accepted from the server (default 256 MiB). */
  maxMessageBytes?: number;
}

export function parseHostPort(address: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):([0-9]{1,5})$/.exec(address);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 1 || port > 65535) {
    throw new AmbitError('ZT_BAD_CONTROLLER_ADDRESS', `controller address ${JSON.stringify(address)} is not HOST:PORT (e.g. ambit-controller.ambit-system.svc:15012, 10.0.0.1:15012, [fd00::1]:15012); check --controller`);
  }
  return { host: m[1] ?? m[2], port };
}

export class GrpcChannel {
  #o: GrpcChannelOptions;
  #target: { host: string; port: number };
  #session: H2Session | undefined;
  #connecting: Promise<H2Session> | undefined;
  #closed = false;

  constructor(o: GrpcChannelOptions) {
    this.#o = o;
    this.#target = parseHostPort(o.address);
  }

  /** Starts a call; messages written before the stream opens are sent once it does. */
  call(path: string, options: { deadlineMs?: number } = {}): GrpcCall {
    const call = new GrpcCall(path, this.#o.maxMessageBytes ?? 256 * 1024 * 1024);
    const deadline = options.deadlineMs === undefined ? undefined : Date.now() + options.deadlineMs;
    if (options.deadlineMs !== undefined) {
      const timer = setTimeout(() => call.cancel(`deadline of ${options.deadlineMs} ms exceeded`, GRPC.DEADLINE_EXCEEDED), options.deadlineMs);
      call.once('status', () => clearTimeout(timer));
    }
    void this.#open(call, deadline);
    return call;
  }

  /** One request, one response; rejects with grpcError (ZT_GRPC_STATUS) on any other outcome. */
  unary(path: string, request: Buffer, deadlineMs: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const call = this.call(path, { deadlineMs });
      const replies: Buffer[] = [];
      call.on('message', (m: Buffer) => replies.push(m));
      call.once('status', (s: GrpcStatus) => {
        if (s.code !== GRPC.OK) reject(grpcError(path, s));
        else if (replies.length !== 1) reject(grpcError(path, { code: GRPC.INTERNAL, message: `${replies.length} response messages to a unary call` }));
        else resolve(replies[0]);
      });
      call.write(request);
      call.end();
    });
  }

  /** Roots that verify the server from the next connection on (the open one is not touched). */
  setRoots(rootsPem: string): void {
    this.#o = { ...this.#o, rootsPem };
  }

  /** No new calls; the connection closes once the calls on it are done. */
  close(): void {
    this.#closed = true;
    const s = this.#session;
    this.#session = undefined;
    s?.close();
  }

  async #open(call: GrpcCall, deadline: number | undefined): Promise<void> {
    let extra: Record<string, string> = {};
    if (this.#o.callHeaders) {
      try {
        extra = await this.#o.callHeaders();
      } catch (err) {
        call._fail({ code: GRPC.UNAUTHENTICATED, message: errorMessage(err) });
        return;
      }
    }
    if (call.done) return;
    let session: H2Session;
    try {
      session = await this.#connected();
    } catch (err) {
      call._fail({ code: GRPC.UNAVAILABLE, message: `cannot reach ${this.#o.address}: ${errorMessage(err)}` });
      return;
    }
    if (call.done) return;
    const headers: Record<string, string> = {
      ':method': 'POST', ':scheme': 'https', ':path': call.path, ':authority': this.#o.address,
      'content-type': 'application/grpc', te: 'trailers', 'user-agent': 'ambit-agent',
    };
    if (deadline !== undefined) headers['grpc-timeout'] = `${Math.min(99_999_999, Math.max(1, deadline - Date.now()))}m`;
    try {
      call._attach(session.request({ ...extra, ...headers }));
    } catch (err) {
      call._fail({ code: GRPC.UNAVAILABLE, message: `cannot start a call on the connection to ${this.#o.address}: ${errorMessage(err)}` });
    }
  }

  /** The shared connection, opened if there is none usable. */
  #connected(): Promise<H2Session> {
    if (this.#closed) return Promise.reject(new Error('the channel is closed'));
    const s = this.#session;
    if (s && !s.closed) return Promise.resolve(s);
    this.#connecting ??= this.#connect().then((session) => {
      this.#connecting = undefined;
      if (this.#closed) {
        session.close();
        throw new Error('the channel is closed');
      }
      this.#adopt(session);
      return session;
    }, (err: unknown) => {
      this.#connecting = undefined;
      throw err;
    });
    return this.#connecting;
  }

  #adopt(session: H2Session): void {
    this.#session = session;
    const forget = () => {
      if (this.#session === session) this.#session = undefined;
    };
    session.on('goaway', forget); // its calls finish; new ones go to a new connection
    session.on('error', (err: Error) => log.debug('controller connection error', { controller: this.#o.address, error: err.message }));
    session.once('close', forget);
    const every = this.#o.keepaliveMs ?? 10_000;
    if (every <= 0) return;
    const within = this.#o.keepaliveTimeoutMs ?? 5_000;
    const timer = setInterval(() => {
      const t = setTimeout(() => session.destroy(new Error(`keepalive PING not answered within ${within} ms`)), within);
      t.unref();
      if (!session.ping(() => clearTimeout(t))) clearTimeout(t);
    }, every);
    timer.unref();
    session.once('close', () => clearInterval(timer));
  }

  #connect(): Promise<H2Session> {
    const { host, port } = this.#target;
    const timeoutMs = this.#o.connectTimeoutMs ?? 10_000;
    const o = this.#o;
    return new Promise<H2Session>((resolve, reject) => {
      const sock = tls.connect({
        host, port, servername: o.servername, ca: o.rootsPem, cert: o.certPem, key: o.keyPem, ALPNProtocols: ['h2'],
      });
      sock.setNoDelay(true); // small frames (ACKs, WINDOW_UPDATEs, PINGs) must not wait for Nagle
      let session: H2Session | undefined;
      const fail = (err: Error): void => {
        clearTimeout(timer);
        if (session) session.destroy();
        else sock.destroy();
        reject(err);
      };
      const timer = setTimeout(() => fail(new Error(`no TLS and HTTP/2 set-up within ${timeoutMs} ms`)), timeoutMs);
      sock.once('error', fail);
      sock.once('secureConnect', () => {
        if (sock.alpnProtocol !== 'h2') return fail(new Error(`the server did not negotiate ALPN h2 (got ${String(sock.alpnProtocol)})`));
        const h2 = new H2Session(sock, true);
        session = h2;
        sock.off('error', fail); // the session watches the socket from here on
        const onClose = () => fail(new Error('the server closed the connection during HTTP/2 set-up (did it refuse our client certificate?)'));
        h2.once('error', fail);
        h2.once('close', onClose);
        h2.once('remoteSettings', () => {
          clearTimeout(timer);
          h2.off('error', fail);
          h2.off('close', onClose);
          resolve(h2);
        });
      });
    });
  }
}
