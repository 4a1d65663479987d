/**
 * A small HTTP/1.1 server on node:net for the agent's internal endpoints (admin API, metrics,
 * readiness). node:http costs about 10 MB of RSS once loaded; these endpoints need only
 * GET/HEAD/POST with a Content-Length body, keep-alive and in-order answers to pipelined requests.
 *
 * Limits: 16 KiB request head, 1 MiB body (Content-Length only: a Transfer-Encoding body is
 * refused with 411), a deadline for a whole request once its first byte arrived and an idle
 * timeout between requests, so a slow client cannot hold a socket. Malformed input gets a 4xx and
 * the connection is closed; a handler that throws gets a 500 and the connection goes on.
 */
import { Server, type Socket } from 'node:net';
import { errorMessage } from './errors.ts';
import { logger } from './log.ts';

export interface LiteRequest {
  method: string;
  /** The request-target as sent (origin-form: path and query). */
  target: string;
  /** The target's path (before '?'), not decoded. */
  path: string;
  query: URLSearchParams;
  /** Lower-case names; repeated fields joined with ', '. */
  headers: Record<string, string>;
  body: Buffer;
  /** '1.0' or '1.1'. */
  version: string;
}

export interface LiteResponse {
  status: number;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

export type LiteHandler = (req: LiteRequest) => LiteResponse | Promise<LiteResponse>;

export interface LiteServerOptions {
  /** Logger component for handler failures (default 'http'). */
  name?: string;
  maxHeadBytes?: number;
  maxBodyBytes?: number;
  /** A request must be complete (head and body) this long after its first byte: else 408. */
  requestTimeoutMs?: number;
  /** A connection with no request in progress is closed after this long. */
  idleTimeoutMs?: number;
}

const DEFAULTS = { maxHeadBytes: 16 * 1024, maxBodyBytes: 1024 * 1024, requestTimeoutMs: 30_000, idleTimeoutMs: 30_000 };
const CRLF2 = Buffer.from('\r\n\r\n', 'latin1');
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const REQUEST_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP\/(\d)\.(\d)$/;
const HEADER_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*$/;
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;
const REASONS: Record<number, string> = {
  100: 'Continue', 200: 'OK', 204: 'No Content', 304: 'Not Modified', 400: 'Bad Request', 404: 'Not Found',
  405: 'Method Not Allowed', 408: 'Request Timeout', 411: 'Length Required', 413: 'Content Too Large',
  431: 'Request Header Fields Too Large', 500: 'Internal Server Error', 501: 'Not Implemented',
  503: 'Service Unavailable', 505: 'HTTP Version Not Supported',
};

/** A request the connection cannot go on from: answered with `status` and closed. */
class Refusal {
  readonly status: number;
  readonly reason: string;
  constructor(status: number, reason: string) {
    this.status = status;
    this.reason = reason;
  }
}

/** A net.Server speaking HTTP/1.1 to `handler`; listen() and the 'error' event as any net.Server. */
export class LiteServer extends Server {
  readonly #handler: LiteHandler;
  readonly #opts: Required<LiteServerOptions>;
  readonly #conns = new Set<LiteConnection>();

  constructor(handler: LiteHandler, opts: LiteServerOptions = {}) {
    // Half-open: a client may send its request and FIN at once and still wait for the answer.
    super({ allowHalfOpen: true });
    this.#handler = handler;
    this.#opts = { name: 'http', ...DEFAULTS, ...opts };
    this.on('connection', (socket: Socket) => {
      const c = new LiteConnection(socket, this.#handler, this.#opts);
      this.#conns.add(c);
      socket.once('close', () => this.#conns.delete(c));
    });
  }

  /** Stops listening; idle keep-alive connections close now, busy ones after their answer. */
  override close(callback?: (err?: Error) => void): this {
    super.close(callback);
    for (const c of this.#conns) c.closeWhenIdle();
    return this;
  }

  /** Drops every connection at once (busy or not). */
  closeAllConnections(): void {
    for (const c of this.#conns) c.destroy();
  }
}

export function createLiteServer(handler: LiteHandler, opts?: LiteServerOptions): LiteServer {
  return new LiteServer(handler, opts);
}

class LiteConnection {
  readonly #socket: Socket;
  readonly #handler: LiteHandler;
  readonly #opts: Required<LiteServerOptions>;
  #buf: Buffer = Buffer.alloc(0);
  /** Parsed head waiting for its body. */
  #pending: { req: Omit<LiteRequest, 'body'>; length: number; close: boolean } | undefined;
  #busy = false;
  /** Close after the answer in progress (server closing). */
  #closing = false;
  /** The peer sent FIN: answer the complete requests, then close. */
  #ended = false;
  #finished = false;
  #timer: NodeJS.Timeout | undefined;
  #timing: 'idle' | 'request' | 'none' = 'none';

  constructor(socket: Socket, handler: LiteHandler, opts: Required<LiteServerOptions>) {
    this.#socket = socket;
    this.#handler = handler;
    this.#opts = opts;
    socket.setNoDelay(true);
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.#clearTimer());
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('end', () => {
      this.#ended = true;
      if (!this.#busy) this.#pump();
    });
    this.#arm('idle');
  }

  destroy(): void {
    this.#socket.destroy();
  }

  closeWhenIdle(): void {
    this.#closing = true;
    if (!this.#busy && this.#buf.length === 0 && !this.#pending) this.#finish();
  }

  #onData(chunk: Buffer): void {
    if (this.#finished) return; // after the last answer: read and drop until the peer closes
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    // Pipelined data beyond one full request waits in the kernel until we catch up.
    if (this.#buf.length > this.#opts.maxHeadBytes + this.#opts.maxBodyBytes) this.#socket.pause();
    if (!this.#busy) this.#pump();
  }

  /** Parses and answers complete requests one at a time, in order. */
  #pump(): void {
    while (!this.#busy && !this.#finished && !this.#socket.destroyed) {
      if (!this.#pending) {
        // Empty lines before a request line are allowed (RFC 9112 §2.2).
        let skip = 0;
        while (this.#buf.length >= skip + 2 && this.#buf[skip] === 13 && this.#buf[skip + 1] === 10) skip += 2;
        if (skip > 0) this.#buf = this.#buf.subarray(skip);
        if (this.#buf.length === 0) break;
        if (this.#timing !== 'request') this.#arm('request');
        const end = this.#buf.indexOf(CRLF2);
        if (end < 0 || end + 4 > this.#opts.maxHeadBytes) {
          if (end >= 0 || this.#buf.length > this.#opts.maxHeadBytes) return this.#refuse(new Refusal(431, `request head over ${this.#opts.maxHeadBytes} bytes`));
          break;
        }
        const head = this.#buf.toString('latin1', 0, end);
        this.#buf = this.#buf.subarray(end + 4);
        const parsed = this.#parseHead(head);
        if (parsed instanceof Refusal) return this.#refuse(parsed);
        this.#pending = parsed;
        if (parsed.length > this.#buf.length && /^100-continue$/i.test(parsed.req.headers.expect ?? '')) {
          this.#socket.write('HTTP/1.1 100 Continue\r\n\r\n');
        }
      }
      const p = this.#pending;
      if (this.#buf.length < p.length) break;
      const body = Buffer.from(this.#buf.subarray(0, p.length));
      this.#buf = this.#buf.subarray(p.length);
      this.#pending = undefined;
      this.#dispatch({ ...p.req, body }, p.close);
    }
    if (this.#busy || this.#finished || this.#socket.destroyed) return;
    // Nothing complete left: a peer that stopped sending, or a closing server with nothing half-read, is done.
    if (this.#ended || (this.#closing && !this.#pending && this.#buf.length === 0)) return this.#finish();
    if (this.#buf.length <= this.#opts.maxHeadBytes + this.#opts.maxBodyBytes) this.#socket.resume();
  }

  #parseHead(head: string): { req: Omit<LiteRequest, 'body'>; length: number; close: boolean } | Refusal {
    const lines = head.split('\r\n');
    const m = REQUEST_LINE.exec(lines[0]);
    if (!m) return new Refusal(400, 'malformed request line');
    const [, method, target, major, minor] = m;
    if (major !== '1') return new Refusal(505, `HTTP/${major}.${minor} is not supported; use HTTP/1.1`);
    if (!target.startsWith('/')) return new Refusal(400, 'the request target must be a path (origin-form)');
    const headers = Object.create(null) as Record<string, string>;
    for (let i = 1; i < lines.length; i++) {
      const h = HEADER_LINE.exec(lines[i]);
      if (!h || BAD_VALUE.test(h[2])) return new Refusal(400, `malformed header line ${i}`);
      const name = h[1].toLowerCase();
      headers[name] = Object.hasOwn(headers, name) ? `${headers[name]}, ${h[2]}` : h[2];
    }
    if (headers['transfer-encoding'] !== undefined) {
      if (headers['content-length'] !== undefined) return new Refusal(400, 'both Transfer-Encoding and Content-Length');
      return new Refusal(411, 'only Content-Length request bodies are accepted');
    }
    let length = 0;
    const cl = headers['content-length'];
    if (cl !== undefined) {
      const values = new Set(cl.split(',').map((v) => v.trim()));
      const [v] = values;
      if (values.size !== 1 || !/^\d{1,16}$/.test(v)) return new Refusal(400, `bad Content-Length ${JSON.stringify(cl)}`);
      length = Number(v);
      if (length > this.#opts.maxBodyBytes) return new Refusal(413, `request body over ${this.#opts.maxBodyBytes} bytes`);
    }
    const version = minor === '0' ? '1.0' : '1.1';
    const connection = (headers.connection ?? '').toLowerCase().split(',').map((t) => t.trim());
    const close = version === '1.0' || connection.includes('close');
    const q = target.indexOf('?');
    const path = q < 0 ? target : target.slice(0, q);
    const query = new URLSearchParams(q < 0 ? '' : target.slice(q + 1));
    return { req: { method, target, path, query, headers, version }, length, close };
  }

  #dispatch(req: LiteRequest, close: boolean): void {
    this.#busy = true;
    this.#arm('none');
    const log = logger(this.#opts.name);
    let result: LiteResponse | Promise<LiteResponse>;
    try {
      result = this.#handler(req);
    } catch (err) {
      result = Promise.reject(err);
    }
    Promise.resolve(result).then((res) => res, (err: unknown) => {
      log.error('request handler failed', { method: req.method, path: req.path, error: errorMessage(err) });
      return INTERNAL;
    }).then((res) => {
      this.#busy = false;
      if (this.#socket.destroyed) return;
      const last = close || this.#closing;
      let bytes: Buffer;
      try {
        bytes = encode(req, res, last);
      } catch (err) {
        log.error('bad response from request handler', { method: req.method, path: req.path, error: errorMessage(err) });
        bytes = encode(req, INTERNAL, last);
      }
      this.#socket.write(bytes);
      if (last) return this.#finish();
      this.#arm('idle');
      this.#pump();
    });
  }

  #refuse(r: Refusal): void {
    if (!this.#socket.destroyed && this.#socket.writable) {
      this.#socket.write(serialize(r.status, { 'content-type': 'text/plain' }, Buffer.from(`${r.reason}\n`), true, true));
    }
    this.#finish();
  }

  /**
   * After the last answer: FIN, then drop whatever still arrives. The socket goes once the peer
   * closes too, or when the idle timer fires.
   */
  #finish(): void {
    this.#finished = true;
    this.#buf = Buffer.alloc(0);
    this.#pending = undefined;
    if (!this.#socket.destroyed) {
      this.#socket.end();
      this.#socket.resume();
    }
    this.#arm('idle');
  }

  #arm(timing: 'idle' | 'request' | 'none'): void {
    this.#timing = timing;
    this.#clearTimer();
    if (timing === 'none' || this.#socket.destroyed) return;
    const request = timing === 'request';
    this.#timer = setTimeout(() => {
      if (request && !this.#finished) return this.#refuse(new Refusal(408, 'request not complete in time'));
      this.#socket.destroy();
    }, request ? this.#opts.requestTimeoutMs : this.#opts.idleTimeoutMs);
    this.#timer.unref();
  }

  #clearTimer(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

const INTERNAL: LiteResponse = { status: 500, headers: { 'content-type': 'text/plain' }, body: 'internal error\n' };

/** The response bytes; throws on a status or header the wire cannot carry. */
function encode(req: LiteRequest, res: LiteResponse, close: boolean): Buffer {
  const body = typeof res.body === 'string' ? Buffer.from(res.body) : res.body ?? Buffer.alloc(0);
  return serialize(res.status, res.headers ?? {}, body, req.method !== 'HEAD', close);
}

function serialize(status: number, headers: Record<string, string>, body: Buffer, withBody: boolean, close: boolean): Buffer {
  if (!Number.isInteger(status) || status < 200 || status > 599) throw new Error(`bad status ${status}`);
  let head = `HTTP/1.1 ${status} ${REASONS[status] ?? ''}\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (lower === 'content-length' || lower === 'connection' || lower === 'transfer-encoding') continue;
    if (!TOKEN.test(name) || BAD_VALUE.test(value)) throw new Error(`bad response header ${JSON.stringify(name)}`);
    head += `${name}: ${value}\r\n`;
  }
  const noBody = status === 204 || status === 304;
  if (!noBody) head += `content-length: ${body.length}\r\n`;
  if (close) head += 'connection: close\r\n';
  head += '\r\n';
  const h = Buffer.from(head, 'latin1');
  return withBody && !noBody && body.length > 0 ? Buffer.concat([h, body]) : h;
}
