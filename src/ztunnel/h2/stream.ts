/**
 * One HTTP/2 stream (a CONNECT tunnel) as a node Duplex. Readable side: DATA payloads (views of
 * the TLS read chunks) are pushed as they arrive while the consumer keeps up; otherwise they wait
 * in a queue that the stream's flow-control window bounds, and the window is credited back only as
 * the consumer takes them. Writable side: a write completes once it is framed into DATA within the
 * stream and connection windows and the socket accepted it, so the writer feels the peer's pace.
 * END_STREAM is a half-close: end() sends it, a received one ends the readable side.
 */
import { Duplex } from 'node:stream';
import { E_CANCEL, E_INTERNAL_ERROR, E_NO_ERROR, errorCodeName } from './frames.ts';
import { ReceiveWindow, SendWindow } from './flow-control.ts';

export type H2Headers = Record<string, string>;

/** What a stream needs from its session (implemented by H2Session). */
export interface StreamOwner {
  /** Sends as much of `data` as the windows allow; returns bytes sent. */
  _sendData(stream: H2Stream, data: Buffer, endStream: boolean): number;
  _sendHeaders(stream: H2Stream, headers: H2Headers, endStream: boolean): void;
  _sendRst(stream: H2Stream, code: number): void;
  _sendInPlace(stream: H2Stream, region: Buffer, n: number, done: () => void): boolean;
  readonly _writable: boolean;
  readonly _maxSendFrame: number;
  _consumed(stream: H2Stream, n: number): void;
  /** Calls `cb` once the socket can take more (immediately if it can now). */
  _whenWritable(cb: () => void): void;
  _streamDone(stream: H2Stream, unread: number): void;
}

export class H2StreamError extends Error {
  readonly code: string;
  readonly h2code: number;
  constructor(h2code: number, message: string) {
    super(message);
    this.code = 'ERR_HTTP2_STREAM_ERROR';
    this.h2code = h2code;
  }
}

export class H2Stream extends Duplex {
  readonly id: number;
  readonly session: unknown;
  readonly sendWindow: SendWindow;
  readonly recvWindow: ReceiveWindow;
  headersSent = false;
  /** Set once a final response (client) / the request (server) headers arrived. */
  headersReceived = false;
  /** RST_STREAM code sent or received, if any. */
  rstCode: number | undefined;
  /** The peer reset the stream (frames after that are STREAM_CLOSED errors, RFC 9113 §5.1). */
  rstByPeer = false;
  /** Request content-length, checked against the DATA received (RFC 9113 §8.1.1). */
  contentLength: number | undefined;
  received = 0;
  /** END_STREAM sent / received. */
  localEnded = false;
  remoteEnded = false;
  #owner: StreamOwner;
  #queue: Buffer[] = [];
  #queued = 0;
  #wantsData = false;
  #pending: Buffer | undefined;
  #pendingCb: ((err?: Error | null) => void) | undefined;
  #endAfterPending = false;
  #finalCb: ((err?: Error | null) => void) | undefined;

  constructor(owner: StreamOwner, session: unknown, id: number, sendWindow: number, recvWindow: number) {
    super({ allowHalfOpen: true, writableHighWaterMark: 256 * 1024, readableHighWaterMark: 256 * 1024 });
    this.#owner = owner;
    this.session = session;
    this.id = id;
    this.sendWindow = new SendWindow(sendWindow);
    this.recvWindow = new ReceiveWindow(recvWindow);
  }

  /** Closed both ways on the wire (END_STREAM each way, or RST_STREAM). */
  get wireClosed(): boolean {
    return this.rstCode !== undefined || (this.localEnded && this.remoteEnded);
  }

  /** Server: sends the response headers (`:status` ...); endStream closes our side right away. */
  respond(headers: H2Headers, options: { endStream?: boolean } = {}): void {
    if (this.headersSent) throw new Error(`HTTP/2 stream ${this.id}: response already sent`);
    if (this.destroyed || this.rstCode !== undefined) return;
    const end = options.endStream === true;
    this.#owner._sendHeaders(this, headers, end);
    if (end) {
      this.localEnded = true;
      this.end();
    }
  }

  /** Resets the stream with `code` (RST_STREAM) and destroys it, as node's Http2Stream.close(). */
  close(code: number = E_NO_ERROR): void {
    if (this.destroyed) return;
    if (this.rstCode === undefined && !this.wireClosed) {
      this.rstCode = code;
      this.#owner._sendRst(this, code);
    }
    this.destroy();
  }

  // --- called by the session ---

  _onData(chunk: Buffer): void {
    if (this.destroyed) return this.#owner._consumed(this, chunk.length);
    if (this.#wantsData && this.#queued === 0) {
      this.#owner._consumed(this, chunk.length);
      this.#wantsData = this.push(chunk);
    } else {
      this.#queue.push(chunk);
      this.#queued += chunk.length;
    }
  }

  _onEnd(): void {
    this.remoteEnded = true;
    if (this.#queued === 0) this.push(null);
    this.#maybeDone();
  }

  _onRst(code: number): void {
    this.rstCode = code;
    this.rstByPeer = true;
    if (code === E_NO_ERROR) {
      // "stop sending": a complete response was already delivered
      if (!this.remoteEnded) this.destroy(new H2StreamError(code, `stream ${this.id} reset by peer (NO_ERROR) before it ended`));
      else this.destroy();
    } else {
      this.destroy(new H2StreamError(code, `stream ${this.id} reset by peer: ${errorCodeName(code)}`));
    }
  }

  /** Stream error found by the session: RST_STREAM with `code`, destroy with an error. */
  _fail(code: number, message: string): void {
    if (this.rstCode === undefined) {
      this.rstCode = code;
      this.#owner._sendRst(this, code);
    }
    this.destroy(new H2StreamError(code, message));
  }

  /** The windows grew: send what waits. */
  _flush(): void {
    const data = this.#pending;
    if (!data) return;
    const n = this.#owner._sendData(this, data, false);
    if (n < data.length) {
      this.#pending = data.subarray(n);
      return;
    }
    this.#pending = undefined;
    const cb = this.#pendingCb!;
    this.#pendingCb = undefined;
    this.#owner._whenWritable(() => {
      cb();
      if (this.#endAfterPending) this.#sendEnd();
    });
  }

  /**
   * Zero-copy write for a relay that reads into `region` behind FRAME_HEADER_LEN bytes of room:
   * sent as one DATA frame when nothing is queued ahead of it and the windows take all `n` bytes,
   * `done` running once the region may be reused. False when the caller must write a copy instead
   * (order is kept: the copy queues behind whatever waits).
   */
  writeInPlace(region: Buffer, n: number, done: () => void): boolean {
    if (this.destroyed || this.rstCode !== undefined || this.localEnded || this.writableEnded) return false;
    if (this.#pending || this.writableLength > 0) return false;
    return this.#owner._sendInPlace(this, region, n, done);
  }

  /** The session's socket takes more now (a relay keeps reading) or it should wait for onWritable. */
  get sessionWritable(): boolean { return this.#owner._writable; }

  /** The largest DATA frame payload the session sends now. */
  get maxInPlace(): number { return this.#owner._maxSendFrame; }

  /** Calls `cb` once the session's socket takes more. */
  onWritable(cb: () => void): void { this.#owner._whenWritable(cb); }

  // --- Duplex ---

  override _read(): void {
    while (this.#queue.length > 0) {
      const chunk = this.#queue.shift()!;
      this.#queued -= chunk.length;
      this.#owner._consumed(this, chunk.length);
      if (!this.push(chunk)) {
        this.#wantsData = false;
        return;
      }
    }
    if (this.remoteEnded) {
      this.push(null);
      return;
    }
    this.#wantsData = true;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.rstCode !== undefined || this.localEnded) {
      cb(new H2StreamError(this.rstCode ?? E_NO_ERROR, `write after the stream ${this.id} was closed`));
      return;
    }
    const n = chunk.length === 0 ? 0 : this.#owner._sendData(this, chunk, false);
    if (n < chunk.length) {
      this.#pending = chunk.subarray(n);
      this.#pendingCb = cb;
      return;
    }
    this.#owner._whenWritable(cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.#finalCb = cb;
    if (this.#pending) this.#endAfterPending = true;
    else this.#sendEnd();
  }

  #sendEnd(): void {
    const cb = this.#finalCb;
    this.#finalCb = undefined;
    if (!this.localEnded && this.rstCode === undefined) {
      this.localEnded = true;
      this.#owner._sendData(this, EMPTY, true);
    }
    this.#maybeDone();
    cb?.();
  }

  #maybeDone(): void {
    // Nothing more on the wire, and (autoDestroy) the Duplex closes once the reader has everything.
    if (this.wireClosed) this.#owner._streamDone(this, 0);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.wireClosed) {
      const code = err ? (err instanceof H2StreamError ? err.h2code : E_INTERNAL_ERROR) : E_CANCEL;
      this.rstCode = code;
      this.#owner._sendRst(this, code === E_NO_ERROR ? E_CANCEL : code);
    }
    const unread = this.#queued;
    this.#queue = [];
    this.#queued = 0;
    this.#owner._streamDone(this, unread);
    const pcb = this.#pendingCb;
    this.#pending = undefined;
    this.#pendingCb = undefined;
    pcb?.(err ?? new H2StreamError(E_CANCEL, `stream ${this.id} destroyed`));
    cb(err);
  }
}

const EMPTY = Buffer.alloc(0);
