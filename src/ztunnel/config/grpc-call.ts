/**
 * One gRPC call on one HTTP/2 stream of Ambit's own session (src/ztunnel/h2): length-prefixed
 * messages (1 byte compressed flag, 4 bytes big-endian length) both ways, reassembled across DATA
 * frames, and a final status from the trailers (grpc-status, grpc-message), from a trailers-only
 * response, or derived from what broke (HTTP status, RST_STREAM, a lost connection).
 * Writes made before the stream is open (connecting, reading the token) wait in order.
 * Events: 'message' (Buffer), then exactly one 'status' (GrpcStatus); nothing after it.
 */
import { EventEmitter } from 'node:events';
import { AmbitError } from '../../shared/errors.ts';
import { E_CANCEL, E_ENHANCE_YOUR_CALM, E_INADEQUATE_SECURITY, E_NO_ERROR, E_REFUSED_STREAM } from '../h2/frames.ts';
import type { H2Headers, H2Stream } from '../h2/stream.ts';

/** The gRPC status codes this client produces or tells apart. */
export const GRPC = {
  OK: 0, CANCELLED: 1, UNKNOWN: 2, INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4, PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8, UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14, UNAUTHENTICATED: 16,
} as const;

const NAMES = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS',
  'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED',
  'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];

export interface GrpcStatus { code: number; message: string }

export function grpcStatusName(code: number): string {
  return NAMES[code] ?? `code ${code}`;
}

/** A failed call as an error: ZT_GRPC_STATUS, details.grpcStatus / details.grpcMessage. */
export function grpcError(path: string, s: GrpcStatus): AmbitError {
  return new AmbitError('ZT_GRPC_STATUS', `${path} failed: grpc-status ${s.code} (${grpcStatusName(s.code)}), grpc-message ${JSON.stringify(s.message)}`, {
    details: { grpcStatus: s.code, grpcMessage: s.message },
  });
}

/** HTTP status -> gRPC status when a response carries no grpc-status (gRPC's HTTP mapping). */
function fromHttpStatus(status: number): number {
  switch (status) {
    case 400: return GRPC.INTERNAL;
    case 401: return GRPC.UNAUTHENTICATED;
    case 403: return GRPC.PERMISSION_DENIED;
    case 404: return GRPC.UNIMPLEMENTED;
    case 429: case 502: case 503: case 504: return GRPC.UNAVAILABLE;
    default: return GRPC.UNKNOWN;
  }
}

function fromRstCode(code: number): number {
  switch (code) {
    case E_REFUSED_STREAM: return GRPC.UNAVAILABLE;
    case E_CANCEL: return GRPC.CANCELLED;
    case E_ENHANCE_YOUR_CALM: return GRPC.RESOURCE_EXHAUSTED;
    case E_INADEQUATE_SECURITY: return GRPC.PERMISSION_DENIED;
    default: return GRPC.INTERNAL;
  }
}

/** grpc-message is percent-encoded; a bad escape is kept as it is. */
function decodeGrpcMessage(v: string | undefined): string {
  if (!v) return '';
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

function statusFrom(h: H2Headers): GrpcStatus | undefined {
  const raw = h['grpc-status'];
  if (raw === undefined) return undefined;
  const code = /^[0-9]+$/.test(raw) ? Number(raw) : GRPC.UNKNOWN;
  return { code, message: decodeGrpcMessage(h['grpc-message']) || (code === GRPC.UNKNOWN && !/^[0-9]+$/.test(raw) ? `bad grpc-status ${JSON.stringify(raw)}` : '') };
}

class FrameError extends Error {
  readonly status: GrpcStatus;
  constructor(code: number, message: string) {
    super(message);
    this.status = { code, message };
  }
}

/** Frames messages out of DATA chunks. */
class Deframer {
  #chunks: Buffer[] = [];
  #have = 0;
  /** length of the message being collected, -1 while waiting for a 5-byte prefix */
  #need = -1;
  readonly #max: number;

  constructor(max: number) {
    this.#max = max;
  }

  get midMessage(): boolean { return this.#have > 0 || this.#need >= 0; }

  /** Returns the messages completed by `chunk`; throws a FrameError for a bad frame. */
  push(chunk: Buffer): Buffer[] {
    this.#chunks.push(chunk);
    this.#have += chunk.length;
    const out: Buffer[] = [];
    for (;;) {
      if (this.#need < 0) {
        if (this.#have < 5) return out;
        const head = this.#take(5);
        if (head[0] !== 0) {
          throw new FrameError(GRPC.INTERNAL, head[0] === 1 ? 'the server sent a compressed message, but no compression was negotiated' : `bad message flag ${head[0]}`);
        }
        const len = head.readUInt32BE(1);
        if (len > this.#max) throw new FrameError(GRPC.RESOURCE_EXHAUSTED, `message of ${len} bytes exceeds the limit of ${this.#max}`);
        this.#need = len;
      }
      if (this.#have < this.#need) return out;
      out.push(this.#take(this.#need));
      this.#need = -1;
    }
  }

  #take(n: number): Buffer {
    this.#have -= n;
    const first = this.#chunks[0];
    if (first !== undefined && first.length >= n) {
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.#chunks[0];
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(k);
    }
    return out;
  }
}

export function frameMessage(message: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + message.length);
  out[0] = 0;
  out.writeUInt32BE(message.length, 1);
  message.copy(out, 5);
  return out;
}

export class GrpcCall extends EventEmitter {
  readonly path: string;
  #stream: H2Stream | undefined;
  #queued: Buffer[] = [];
  #endQueued = false;
  #deframer: Deframer;
  #headersStatus: GrpcStatus | undefined;
  #trailersStatus: GrpcStatus | undefined;
  #done = false;

  constructor(path: string, maxMessageBytes: number) {
    super();
    this.path = path;
    this.#deframer = new Deframer(maxMessageBytes);
  }

  get done(): boolean { return this.#done; }

  /** Sends one serialized message (queued until the stream is open). */
  write(message: Buffer): void {
    if (this.#done) return;
    const framed = frameMessage(message);
    if (this.#stream) this.#stream.write(framed);
    else this.#queued.push(framed);
  }

  /** Half-close: no more messages from us. */
  end(): void {
    if (this.#done) return;
    if (this.#stream) this.#stream.end();
    else this.#endQueued = true;
  }

  /** Abandons the call (RST_STREAM CANCEL); the status is CANCELLED unless one came already. */
  cancel(message = 'cancelled by the client', code: number = GRPC.CANCELLED): void {
    if (this.#done) return;
    this.#finish({ code, message });
  }

  /** The channel could not open the stream. */
  _fail(status: GrpcStatus): void {
    this.#finish(status);
  }

  /** The channel opened the stream (request headers sent). */
  _attach(stream: H2Stream): void {
    if (this.#done) {
      stream.close(E_CANCEL);
      return;
    }
    this.#stream = stream;
    stream.on('response', (h: H2Headers) => this.#onResponse(h));
    stream.on('trailers', (h: H2Headers) => { this.#trailersStatus = statusFrom(h); });
    stream.on('data', (chunk: Buffer) => this.#onData(chunk));
    stream.on('end', () => this.#onEnd());
    stream.on('error', (err: Error) => this.#finish(this.#fromStreamError(err)));
    stream.on('close', () => this.#finish({ code: GRPC.UNAVAILABLE, message: 'the HTTP/2 stream closed before a gRPC status arrived' }));
    for (const m of this.#queued) stream.write(m);
    this.#queued = [];
    if (this.#endQueued) stream.end();
  }

  #onResponse(h: H2Headers): void {
    const status = statusFrom(h);
    if (status) {
      this.#headersStatus = status; // trailers-only: the stream ends right after
      return;
    }
    const http = Number(h[':status']);
    if (http !== 200) {
      this.#finish({ code: fromHttpStatus(http), message: `HTTP status ${http} without grpc-status` });
      return;
    }
    const ct = h['content-type'] ?? '';
    if (!ct.startsWith('application/grpc')) this.#finish({ code: GRPC.UNKNOWN, message: `content-type ${JSON.stringify(ct)} is not application/grpc` });
  }

  #onData(chunk: Buffer): void {
    if (this.#done) return;
    let messages: Buffer[];
    try {
      messages = this.#deframer.push(chunk);
    } catch (err) {
      if (!(err instanceof FrameError)) throw err;
      this.#finish(err.status);
      return;
    }
    for (const m of messages) {
      if (this.#done) return;
      this.emit('message', m);
    }
  }

  #onEnd(): void {
    const status = this.#trailersStatus ?? this.#headersStatus;
    if (!status) this.#finish({ code: GRPC.INTERNAL, message: 'the server ended the stream without a grpc-status' });
    else if (status.code === GRPC.OK && this.#deframer.midMessage) this.#finish({ code: GRPC.INTERNAL, message: 'the stream ended inside a message' });
    else this.#finish(status);
  }

  #fromStreamError(err: Error): GrpcStatus {
    const s = this.#stream;
    // reset by the server: its code says why; anything else here is a lost or broken connection
    if (s?.rstByPeer && s.rstCode !== undefined) return { code: fromRstCode(s.rstCode), message: err.message };
    return { code: GRPC.UNAVAILABLE, message: err.message };
  }

  #finish(status: GrpcStatus): void {
    if (this.#done) return;
    this.#done = true;
    this.#queued = [];
    const s = this.#stream;
    // Our side may still be open (a stream the server ended, or one we give up): reset it.
    if (s && !s.destroyed) s.close(status.code === GRPC.OK ? E_NO_ERROR : E_CANCEL);
    this.emit('status', status);
  }
}
