/**
 * A lean HTTP/2 connection (RFC 9113) for HBONE: just what CONNECT tunnels need, on an already
 * negotiated TLS socket (ALPN h2). Client and server: preface, SETTINGS/ACK, WINDOW_UPDATE at both
 * levels, PING, GOAWAY, RST_STREAM, HEADERS+CONTINUATION, DATA with END_STREAM as half-close, max
 * concurrent streams. No server push; PRIORITY is parsed and ignored. Any protocol violation by the
 * peer ends in RST_STREAM (stream errors) or GOAWAY with the matching code (connection errors),
 * never in an exception out of the socket's 'data' handler.
 *
 * Events, named as node:http2's so the proxy treats both alike: 'connect' (client), 'stream'
 * (server: stream, headers), 'remoteSettings', 'goaway' (code, lastStreamId), 'error', 'close'.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import {
  DEFAULT_MAX_FRAME, E_CANCEL, E_COMPRESSION_ERROR, E_ENHANCE_YOUR_CALM, E_FLOW_CONTROL_ERROR, E_FRAME_SIZE_ERROR,
  E_NO_ERROR, E_PROTOCOL_ERROR, E_REFUSED_STREAM, E_STREAM_CLOSED, errorCodeName, F_ACK, F_END_STREAM, FrameReader,
  goawayFrame, H2Error, headersFrames, MAX_ALLOWED_FRAME, MAX_WINDOW, pingFrame, PREFACE, rstStreamFrame,
  S_ENABLE_PUSH, S_INITIAL_WINDOW_SIZE, S_MAX_CONCURRENT_STREAMS, S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE,
  settingsAck, settingsFrame, T_CONTINUATION, T_DATA, T_GOAWAY, T_HEADERS, T_PING, T_PRIORITY, T_PUSH_PROMISE,
  T_RST_STREAM, T_SETTINGS, T_WINDOW_UPDATE, windowUpdateFrame,
} from './frames.ts';
import type { FrameSink } from './frames.ts';
import { ReceiveWindow, SendWindow } from './flow-control.ts';
import { requestProblem, responseProblem, toList, toObject, trailersProblem } from './headers.ts';
import { HpackDecoder, HpackError, hpackEncode } from './hpack.ts';
import type { HeaderList } from './hpack.ts';
import { H2Stream, H2StreamError } from './stream.ts';
import { FrameWriter, MAX_UNSENT } from './writer.ts';
import { HeaderBlockAssembler } from './header-block.ts';
import type { HeaderBlock } from './header-block.ts';
import { applySettings, defaultRemoteSettings } from './settings.ts';
import type { RemoteSettings } from './settings.ts';
import type { H2Headers, StreamOwner } from './stream.ts';
import type { H2SessionOptions } from './session-options.ts';

export type { RemoteSettings } from './settings.ts';
export type { H2SessionOptions } from './session-options.ts';

const MAX_HEADER_BLOCK = 256 * 1024;
const MAX_HEADER_LIST = 64 * 1024;
const EMPTY = Buffer.alloc(0);
const MAX_PEER_RESETS_PER_S = 1000;

interface Ping {
  payload: Buffer;
  cb: (err: Error | null, durationMs: number, payload: Buffer) => void;
  t0: bigint;
}

export class H2Session extends EventEmitter implements StreamOwner, FrameSink {
  readonly socket: Duplex;
  readonly isClient: boolean;
  readonly remoteSettings: RemoteSettings = defaultRemoteSettings();
  #o: Required<H2SessionOptions>;
  #reader: FrameReader;
  #decoder = new HpackDecoder(4096, MAX_HEADER_LIST);
  #streams = new Map<number, H2Stream>();
  #active = new Set<H2Stream>();
  #nextStreamId: number;
  #lastPeerStreamId = 0;
  #prefaceLeft: number;
  #gotSettings = false;
  #connSend = new SendWindow(65_535);
  #connRecv = new ReceiveWindow(65_535);
  #headerBlocks = new HeaderBlockAssembler(MAX_HEADER_BLOCK);
  #data: H2Stream | undefined;
  #dataLen = 0;
  #dataGot = 0;
  #w: FrameWriter;
  #blocked = new Set<H2Stream>();
  #pings: Ping[] = [];
  /** Recently closed streams the peer ended or reset: more frames on them are STREAM_CLOSED errors. */
  #peerClosed = new Set<number>();
  #rstWindowStart = 0;
  #rstCount = 0;
  #closing = false;
  #goawaySent = false;
  #goawayReceived = false;
  #destroyed = false;
  #closeEmitted = false;
  #endTimer: NodeJS.Timeout | undefined;

  constructor(socket: Duplex, isClient: boolean, options: H2SessionOptions = {}) {
    super();
    this.socket = socket;
    this.isClient = isClient;
    this.#o = {
      initialWindowSize: options.initialWindowSize ?? 4 * 1024 * 1024,
      connectionWindow: options.connectionWindow ?? 16 * 1024 * 1024,
      maxFrameSize: Math.max(DEFAULT_MAX_FRAME, Math.min(MAX_ALLOWED_FRAME, options.maxFrameSize ?? 1024 * 1024)),
      maxConcurrentStreams: options.maxConcurrentStreams ?? 100,
      maxSendFrame: options.maxSendFrame ?? MAX_ALLOWED_FRAME,
      dataWrite: options.dataWrite ?? 'auto',
    };
    this.#nextStreamId = isClient ? 1 : 2;
    this.#prefaceLeft = isClient ? 0 : PREFACE.length;
    this.#reader = new FrameReader(this, this.#o.maxFrameSize);
    socket.on('data', (chunk: Buffer) => this.#onBytes(chunk));
    this.#w = new FrameWriter(socket, this.#o.dataWrite, () => {
      // a peer that floods us with PINGs/SETTINGS but does not read our answers
      this.destroy(new Error(`peer does not read: more than ${MAX_UNSENT} bytes unsent`), E_ENHANCE_YOUR_CALM);
    });
    socket.on('drain', () => this.#w.onDrain());
    socket.on('error', (err) => this.#emitError(err));
    socket.on('end', () => this.#onSocketEnd());
    socket.on('close', () => this.#onSocketClose());
    const settings: Array<[number, number]> = [
      [S_ENABLE_PUSH, 0],
      [S_MAX_CONCURRENT_STREAMS, this.#o.maxConcurrentStreams],
      [S_INITIAL_WINDOW_SIZE, this.#o.initialWindowSize],
      [S_MAX_FRAME_SIZE, this.#o.maxFrameSize],
      [S_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST],
    ];
    if (isClient) this.#w.queue(PREFACE);
    this.#w.queue(settingsFrame(settings));
    const inc = this.#connRecv.resize(this.#o.connectionWindow);
    if (inc > 0) this.#w.queue(windowUpdateFrame(0, inc));
    this.#w.flush();
    if (isClient) process.nextTick(() => { if (!this.#destroyed) this.emit('connect', this, socket); });
  }

  get closed(): boolean { return this.#closing || this.#destroyed; }
  get destroyed(): boolean { return this.#destroyed; }
  /** Streams open on the wire. */
  get activeStreams(): number { return this.#active.size; }

  /** Client: opens a stream with a request (e.g. CONNECT). Throws if the session takes no new streams. */
  request(headers: Record<string, string | number | string[] | undefined>, options: { endStream?: boolean } = {}): H2Stream {
    if (!this.isClient) throw new Error('request() on a server session');
    if (this.#destroyed || this.#closing || this.#goawayReceived) {
      throw Object.assign(new Error('HTTP/2 session is closing (GOAWAY) or closed: no new streams'), { code: 'ERR_HTTP2_GOAWAY_SESSION' });
    }
    const id = this.#nextStreamId;
    if (id > MAX_WINDOW) throw Object.assign(new Error('HTTP/2 stream ids exhausted'), { code: 'ERR_HTTP2_OUT_OF_STREAMS' });
    this.#nextStreamId += 2;
    const stream = new H2Stream(this, this, id, this.remoteSettings.initialWindowSize, this.#o.initialWindowSize);
    this.#streams.set(id, stream);
    this.#active.add(stream);
    const end = options.endStream === true;
    this._sendHeaders(stream, headers as H2Headers, end);
    if (end) {
      stream.localEnded = true;
      stream.end();
    }
    if (this.#active.size > this.remoteSettings.maxConcurrentStreams) {
      process.nextTick(() => stream._fail(E_REFUSED_STREAM, `peer allows only ${this.remoteSettings.maxConcurrentStreams} concurrent streams`));
    }
    return stream;
  }

  /** Sends a PING; `cb` gets the round trip time once the ACK is back. */
  ping(cb: (err: Error | null, durationMs: number, payload: Buffer) => void = () => {}): boolean {
    if (this.#destroyed) return false;
    const payload = randomBytes(8);
    this.#pings.push({ payload, cb, t0: process.hrtime.bigint() });
    this.#w.queue(pingFrame(payload, false));
    return true;
  }

  /** Grows the connection receive window (node's setLocalWindowSize). */
  setLocalWindowSize(size: number): void {
    const inc = this.#connRecv.resize(size);
    if (inc > 0 && !this.#destroyed) this.#w.queue(windowUpdateFrame(0, inc));
  }

  /** Graceful: GOAWAY, no new streams; the session ends once the open ones are done. */
  close(cb?: () => void): void {
    if (cb) this.once('close', cb);
    if (this.#destroyed || this.#closing) return;
    this.#closing = true;
    this.#sendGoaway(E_NO_ERROR, '');
    this.#maybeFinish();
  }

  /** Immediate: streams are reset, the socket destroyed. A code other than NO_ERROR goes out in a GOAWAY. */
  destroy(err?: Error, code: number = err ? E_PROTOCOL_ERROR : E_NO_ERROR): void {
    if (this.#destroyed) return;
    if (!this.#goawaySent && !this.socket.destroyed && (code !== E_NO_ERROR || err)) this.#sendGoaway(code, err?.message ?? '');
    this.#w.flush();
    this.#destroyed = true;
    this.#closing = true;
    this.#reader.stop();
    const streamErr = err ?? new H2StreamError(E_CANCEL, 'HTTP/2 session destroyed');
    for (const s of [...this.#streams.values()]) {
      if (!s.wireClosed) s.rstCode ??= E_CANCEL;
      if (!s.destroyed) s.destroy(s.readableEnded && s.writableFinished ? undefined : streamErr);
    }
    this.#streams.clear();
    this.#active.clear();
    for (const p of this.#pings.splice(0)) p.cb(new Error('HTTP/2 session closed before the PING was answered'), 0, p.payload);
    if (err) this.#emitError(err);
    this.socket.destroy();
  }

  // --- StreamOwner ---

  _sendHeaders(stream: H2Stream, headers: H2Headers, endStream: boolean): void {
    stream.headersSent = true;
    const block = hpackEncode(toList(headers));
    this.#w.queue(headersFrames(stream.id, block, endStream, this.remoteSettings.maxFrameSize));
  }

  _sendData(stream: H2Stream, data: Buffer, endStream: boolean): number {
    if (this.#destroyed) return data.length; // nowhere to go; the stream is being destroyed
    if (data.length === 0) {
      this.#w.data(stream.id, EMPTY, endStream);
      return 0;
    }
    let sent = 0;
    const maxFrame = this._maxSendFrame;
    while (sent < data.length) {
      const n = Math.min(data.length - sent, stream.sendWindow.available, this.#connSend.available, maxFrame);
      if (n <= 0) {
        if (this.#connSend.available <= 0) this.#blocked.add(stream);
        break;
      }
      stream.sendWindow.take(n);
      this.#connSend.take(n);
      this.#w.data(stream.id, sent === 0 && n === data.length ? data : data.subarray(sent, sent + n), endStream && sent + n === data.length);
      sent += n;
    }
    return sent;
  }

  /**
   * Sends `n` payload bytes that sit behind FRAME_HEADER_LEN bytes of room in `region` as one DATA
   * frame without copying them, if the windows and the peer's frame size take all of them now;
   * false (nothing sent) otherwise. `done` runs when the region may be reused.
   */
  _sendInPlace(stream: H2Stream, region: Buffer, n: number, done: () => void): boolean {
    if (this.#destroyed || n <= 0) return false;
    if (n > this._maxSendFrame) return false;
    if (n > stream.sendWindow.available || n > this.#connSend.available) return false;
    stream.sendWindow.take(n);
    this.#connSend.take(n);
    this.#w.dataInPlace(stream.id, region, n, done);
    return true;
  }

  get _maxSendFrame(): number { return Math.min(this.remoteSettings.maxFrameSize, this.#o.maxSendFrame); }

  /** The socket takes more without queueing beyond the write buffer. */
  get _writable(): boolean { return !this.#destroyed && this.#w.writable; }

  _sendRst(stream: H2Stream, code: number): void {
    if (this.#destroyed) return;
    this.#active.delete(stream);
    this.#w.queue(rstStreamFrame(stream.id, code));
  }

  _consumed(stream: H2Stream, n: number): void {
    if (this.#destroyed) return;
    const connInc = this.#connRecv.consume(n);
    const streamInc = stream.remoteEnded || stream.rstCode !== undefined ? 0 : stream.recvWindow.consume(n);
    if (connInc > 0) this.#w.queue(windowUpdateFrame(0, connInc));
    if (streamInc > 0) this.#w.queue(windowUpdateFrame(stream.id, streamInc));
  }

  _whenWritable(cb: () => void): void {
    if (this.#destroyed) cb();
    else this.#w.whenWritable(cb);
  }

  _streamDone(stream: H2Stream, unread: number): void {
    if (stream.wireClosed) this.#active.delete(stream);
    if (unread > 0) this.#creditConnection(unread);
    if (stream.destroyed) {
      if (stream.remoteEnded || stream.rstByPeer) {
        this.#peerClosed.add(stream.id);
        if (this.#peerClosed.size > 256) this.#peerClosed.delete(this.#peerClosed.values().next().value!);
      }
      this.#active.delete(stream);
      this.#blocked.delete(stream);
      if (this.#streams.get(stream.id) === stream) this.#streams.delete(stream.id);
    }
    this.#maybeFinish();
  }

  // --- writing ---

  #sendGoaway(code: number, debug: string): void {
    this.#goawaySent = true;
    this.#w.queue(goawayFrame(this.#lastPeerStreamId, code, debug));
  }

  #creditConnection(n: number): void {
    const inc = this.#connRecv.consume(n);
    if (inc > 0 && !this.#destroyed) this.#w.queue(windowUpdateFrame(0, inc));
  }

  // --- reading ---

  #onBytes(chunk: Buffer): void {
    if (this.#destroyed) return;
    try {
      if (this.#prefaceLeft > 0) {
        const off = PREFACE.length - this.#prefaceLeft;
        const n = Math.min(this.#prefaceLeft, chunk.length);
        if (!chunk.subarray(0, n).equals(PREFACE.subarray(off, off + n))) {
          throw new H2Error(E_PROTOCOL_ERROR, 'the client did not send the HTTP/2 connection preface');
        }
        this.#prefaceLeft -= n;
        chunk = chunk.subarray(n);
        if (chunk.length === 0) return;
      }
      this.#reader.push(chunk);
    } catch (err) {
      this.#onError(err);
    }
  }

  #onError(err: unknown): void {
    if (err instanceof H2Error && err.streamId !== 0) {
      const s = this.#streams.get(err.streamId);
      if (s) s._fail(err.h2code, err.message);
      else this.#w.queue(rstStreamFrame(err.streamId, err.h2code));
      return;
    }
    if (err instanceof H2Error) return this.#connectionError(err.h2code, err.message);
    if (err instanceof HpackError) return this.#connectionError(E_COMPRESSION_ERROR, err.message);
    // a bug of ours, not the peer's: still only this connection goes
    this.#connectionError(E_PROTOCOL_ERROR, `internal: ${err instanceof Error ? err.message : String(err)}`);
  }

  /** GOAWAY with `code`, then close: the socket ends once the GOAWAY is out. */
  #connectionError(code: number, message: string): void {
    if (this.#destroyed) return;
    this.#reader.stop();
    this.#sendGoaway(code, message);
    this.#w.flush();
    const err = Object.assign(new Error(`HTTP/2 connection error ${message}`), { code: 'ERR_HTTP2_SESSION_ERROR', h2code: code });
    this.socket.end();
    this.#endTimer = setTimeout(() => this.socket.destroy(), 1000);
    this.#endTimer.unref();
    this.#destroyed = true;
    this.#closing = true;
    for (const s of [...this.#streams.values()]) {
      s.rstCode ??= code;
      s.destroy(err);
    }
    this.#streams.clear();
    this.#active.clear();
    this.#emitError(err);
  }

  /** Stream errors are handled here so the reader keeps parsing the rest of the chunk. */
  #guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      if (err instanceof H2Error && err.streamId !== 0) this.#onError(err);
      else throw err;
    }
  }

  onDataStart(sid: number, flags: number, length: number): void {
    this.#guard(() => this.#dataStart(sid, flags, length));
  }

  #dataStart(sid: number, flags: number, length: number): void {
    void flags;
    this.#expectNoContinuation(T_DATA);
    if (!this.#gotSettings) throw new H2Error(E_PROTOCOL_ERROR, 'DATA before the peer\'s SETTINGS');
    if (sid === 0) throw new H2Error(E_PROTOCOL_ERROR, 'DATA on stream 0');
    if (!this.#connRecv.charge(length)) throw new H2Error(E_FLOW_CONTROL_ERROR, `DATA of ${length} bytes exceeds the connection window ${this.#connRecv.open}`);
    this.#data = undefined;
    this.#dataLen = length;
    this.#dataGot = 0;
    const s = this.#streams.get(sid);
    if (!s) {
      this.#creditConnection(length);
      if (this.#isIdle(sid)) throw new H2Error(E_PROTOCOL_ERROR, `DATA on idle stream ${sid}`);
      if (this.#peerClosed.has(sid)) throw new H2Error(E_STREAM_CLOSED, `DATA on stream ${sid} after it was closed`, sid);
      return; // a stream we reset: the frame was in flight
    }
    if (s.remoteEnded || s.rstCode !== undefined) {
      this.#creditConnection(length);
      if (s.rstCode === undefined || s.rstByPeer) throw new H2Error(E_STREAM_CLOSED, `DATA on stream ${sid} after END_STREAM`, sid);
      return;
    }
    if (!s.recvWindow.charge(length)) {
      this.#creditConnection(length);
      throw new H2Error(E_FLOW_CONTROL_ERROR, `DATA of ${length} bytes exceeds stream ${sid}'s window`, sid);
    }
    if (this.isClient && !s.headersReceived) {
      this.#creditConnection(length);
      throw new H2Error(E_PROTOCOL_ERROR, `DATA on stream ${sid} before the response headers`, sid);
    }
    this.#data = s;
  }

  onData(_sid: number, chunk: Buffer): void {
    this.#dataGot += chunk.length;
    this.#data?._onData(chunk);
  }

  onDataEnd(sid: number, flags: number): void {
    const s = this.#data;
    this.#data = undefined;
    if (!s) return;
    const padding = this.#dataLen - this.#dataGot;
    if (padding > 0) this._consumed(s, padding);
    s.received += this.#dataGot;
    const cl = s.contentLength;
    if (cl !== undefined && (s.received > cl || (flags & F_END_STREAM && s.received !== cl))) {
      return this.#guard(() => { throw new H2Error(E_PROTOCOL_ERROR, `stream ${sid}: ${s.received} bytes of DATA, content-length ${cl}`, sid); });
    }
    if (flags & F_END_STREAM) s._onEnd();
  }

  onFrame(type: number, flags: number, sid: number, payload: Buffer): void {
    this.#guard(() => this.#frame(type, flags, sid, payload));
  }

  #frame(type: number, flags: number, sid: number, payload: Buffer): void {
    if (type === T_CONTINUATION) return this.#onHeaderBlock(this.#headerBlocks.onContinuation(flags, sid, payload));
    this.#expectNoContinuation(type);
    if (!this.#gotSettings && type !== T_SETTINGS) throw new H2Error(E_PROTOCOL_ERROR, `frame type ${type} before the peer's SETTINGS`);
    switch (type) {
      case T_HEADERS: return this.#onHeaderBlock(this.#headerBlocks.onHeaders(flags, sid, payload));
      case T_PRIORITY:
        if (sid === 0) throw new H2Error(E_PROTOCOL_ERROR, 'PRIORITY on stream 0');
        if (payload.length !== 5) throw new H2Error(E_FRAME_SIZE_ERROR, 'PRIORITY frame not 5 bytes', sid);
        if ((payload.readUInt32BE(0) & 0x7fffffff) === sid) throw new H2Error(E_PROTOCOL_ERROR, `stream ${sid} depends on itself`, sid);
        return;
      case T_RST_STREAM: return this.#onRst(sid, payload);
      case T_SETTINGS: return this.#onSettings(flags, sid, payload);
      case T_PUSH_PROMISE: throw new H2Error(E_PROTOCOL_ERROR, 'PUSH_PROMISE although push is disabled');
      case T_PING: return this.#onPing(flags, sid, payload);
      case T_GOAWAY: return this.#onGoaway(sid, payload);
      case T_WINDOW_UPDATE: return this.#onWindowUpdate(sid, payload);
      default: return; // unknown frame types are ignored (RFC 9113 §4.1)
    }
  }

  #expectNoContinuation(type: number): void {
    if (this.#headerBlocks.pending) throw new H2Error(E_PROTOCOL_ERROR, `frame type ${type} while a header block awaits CONTINUATION`);
  }

  #isIdle(sid: number): boolean {
    const peerInitiated = (sid % 2 === 1) !== this.isClient;
    return peerInitiated ? sid > this.#lastPeerStreamId : sid >= this.#nextStreamId;
  }

  #onHeaderBlock(b: HeaderBlock | undefined): void {
    if (!b) return; // more CONTINUATION to come
    const { sid, flags } = b;
    const list = this.#decoder.decode(b.block); // always: keeps the HPACK state in step with the peer
    const endStream = (flags & F_END_STREAM) !== 0;
    if (b.selfDependent) throw new H2Error(E_PROTOCOL_ERROR, `stream ${sid} depends on itself`, sid);
    const s = this.#streams.get(sid);
    if (s) return this.#onStreamHeaders(s, list, endStream);
    if (this.isClient) {
      if (sid % 2 === 0) throw new H2Error(E_PROTOCOL_ERROR, `server opened stream ${sid} (push is disabled)`);
      if (this.#isIdle(sid)) throw new H2Error(E_PROTOCOL_ERROR, `HEADERS on idle stream ${sid}`);
      return; // a stream we closed already
    }
    if (sid % 2 === 0) throw new H2Error(E_PROTOCOL_ERROR, `client used even stream id ${sid}`);
    if (sid <= this.#lastPeerStreamId) throw new H2Error(E_STREAM_CLOSED, `HEADERS on closed stream ${sid}`);
    this.#lastPeerStreamId = sid;
    if (this.#goawaySent) return; // after GOAWAY new streams are ignored (RFC 9113 §6.8)
    if (this.#active.size >= this.#o.maxConcurrentStreams) {
      throw new H2Error(E_REFUSED_STREAM, `more than ${this.#o.maxConcurrentStreams} concurrent streams`, sid);
    }
    const problem = requestProblem(list);
    if (problem) throw new H2Error(E_PROTOCOL_ERROR, `malformed request: ${problem}`, sid);
    const headers = toObject(list);
    const cl = headers['content-length'];
    if (cl !== undefined && !/^[0-9]+$/.test(cl)) throw new H2Error(E_PROTOCOL_ERROR, `malformed request: content-length ${JSON.stringify(cl)}`, sid);
    if (cl !== undefined && endStream && Number(cl) !== 0) throw new H2Error(E_PROTOCOL_ERROR, `content-length ${cl} but no DATA`, sid);
    const stream = new H2Stream(this, this, sid, this.remoteSettings.initialWindowSize, this.#o.initialWindowSize);
    stream.headersReceived = true;
    if (cl !== undefined) stream.contentLength = Number(cl);
    this.#streams.set(sid, stream);
    this.#active.add(stream);
    if (endStream) stream._onEnd();
    this.emit('stream', stream, headers, flags);
  }

  #onStreamHeaders(s: H2Stream, list: HeaderList, endStream: boolean): void {
    if (s.remoteEnded) throw new H2Error(E_STREAM_CLOSED, `HEADERS on stream ${s.id} after END_STREAM`, s.id);
    if (this.isClient && !s.headersReceived) {
      const problem = responseProblem(list);
      if (problem) throw new H2Error(E_PROTOCOL_ERROR, `malformed response: ${problem}`, s.id);
      const headers = toObject(list);
      if (headers[':status'][0] === '1') {
        if (endStream) throw new H2Error(E_PROTOCOL_ERROR, 'informational response with END_STREAM', s.id);
        return;
      }
      s.headersReceived = true;
      s.emit('response', headers, 0);
      if (endStream) s._onEnd();
      return;
    }
    // trailers
    if (!endStream) throw new H2Error(E_PROTOCOL_ERROR, `second HEADERS on stream ${s.id} without END_STREAM`, s.id);
    const problem = trailersProblem(list);
    if (problem) throw new H2Error(E_PROTOCOL_ERROR, `malformed trailers: ${problem}`, s.id);
    s.emit('trailers', toObject(list), 0);
    s._onEnd();
  }

  #onRst(sid: number, payload: Buffer): void {
    if (sid === 0) throw new H2Error(E_PROTOCOL_ERROR, 'RST_STREAM on stream 0');
    if (payload.length !== 4) throw new H2Error(E_FRAME_SIZE_ERROR, 'RST_STREAM not 4 bytes');
    if (this.#isIdle(sid)) throw new H2Error(E_PROTOCOL_ERROR, `RST_STREAM on idle stream ${sid}`);
    const s = this.#streams.get(sid);
    if (!s) return;
    // "rapid reset": streams opened and reset at once cost us a handler each (CVE-2023-44487)
    const now = Date.now();
    if (now - this.#rstWindowStart > 1000) {
      this.#rstWindowStart = now;
      this.#rstCount = 0;
    }
    if (++this.#rstCount > MAX_PEER_RESETS_PER_S) throw new H2Error(E_ENHANCE_YOUR_CALM, `more than ${MAX_PEER_RESETS_PER_S} streams reset by the peer within a second`);
    this.#active.delete(s);
    s._onRst(payload.readUInt32BE(0));
  }

  #onSettings(flags: number, sid: number, payload: Buffer): void {
    if (sid !== 0) throw new H2Error(E_PROTOCOL_ERROR, 'SETTINGS on a stream');
    if (flags & F_ACK) {
      if (payload.length !== 0) throw new H2Error(E_FRAME_SIZE_ERROR, 'SETTINGS ACK with a payload');
      if (!this.#gotSettings) throw new H2Error(E_PROTOCOL_ERROR, 'SETTINGS ACK before the peer\'s SETTINGS');
      return;
    }
    const r = this.remoteSettings;
    const windowDelta = applySettings(r, payload, this.isClient);
    if (windowDelta !== 0) {
      for (const s of this.#streams.values()) {
        if (!s.sendWindow.adjust(windowDelta)) throw new H2Error(E_FLOW_CONTROL_ERROR, `stream ${s.id} window overflows`);
      }
    }
    this.#gotSettings = true;
    this.#w.queue(settingsAck());
    this.emit('remoteSettings', r);
    if (windowDelta > 0) for (const s of [...this.#streams.values()]) s._flush();
  }

  #onPing(flags: number, sid: number, payload: Buffer): void {
    if (sid !== 0) throw new H2Error(E_PROTOCOL_ERROR, 'PING on a stream');
    if (payload.length !== 8) throw new H2Error(E_FRAME_SIZE_ERROR, `PING of ${payload.length} bytes`);
    if (!(flags & F_ACK)) return this.#w.queue(pingFrame(payload, true));
    const i = this.#pings.findIndex((p) => p.payload.equals(payload));
    if (i < 0) return;
    const [p] = this.#pings.splice(i, 1);
    p.cb(null, Number(process.hrtime.bigint() - p.t0) / 1e6, p.payload);
  }

  #onGoaway(sid: number, payload: Buffer): void {
    if (sid !== 0) throw new H2Error(E_PROTOCOL_ERROR, 'GOAWAY on a stream');
    if (payload.length < 8) throw new H2Error(E_FRAME_SIZE_ERROR, `GOAWAY of ${payload.length} bytes`);
    const last = payload.readUInt32BE(0) & 0x7fffffff;
    const code = payload.readUInt32BE(4);
    this.#goawayReceived = true;
    // our streams the peer never saw are refused: safe to retry elsewhere
    for (const s of [...this.#streams.values()]) {
      const ours = (s.id % 2 === 1) === this.isClient;
      if (ours && s.id > last) {
        s.rstCode ??= E_REFUSED_STREAM;
        this.#active.delete(s);
        s.destroy(new H2StreamError(E_REFUSED_STREAM, `stream ${s.id} refused by GOAWAY (${errorCodeName(code)})`));
      }
    }
    this.emit('goaway', code, last, Buffer.from(payload.subarray(8)));
    if (!this.#closing) {
      this.#closing = true;
      this.#maybeFinish();
    }
  }

  #onWindowUpdate(sid: number, payload: Buffer): void {
    if (payload.length !== 4) throw new H2Error(E_FRAME_SIZE_ERROR, `WINDOW_UPDATE of ${payload.length} bytes`);
    const inc = payload.readUInt32BE(0) & 0x7fffffff;
    if (sid === 0) {
      if (inc === 0) throw new H2Error(E_PROTOCOL_ERROR, 'WINDOW_UPDATE of 0 on the connection');
      if (!this.#connSend.credit(inc)) throw new H2Error(E_FLOW_CONTROL_ERROR, 'connection window above 2^31-1');
      const blocked = [...this.#blocked];
      this.#blocked.clear();
      for (const s of blocked) s._flush();
      return;
    }
    const s = this.#streams.get(sid);
    if (!s) {
      if (this.#isIdle(sid)) throw new H2Error(E_PROTOCOL_ERROR, `WINDOW_UPDATE on idle stream ${sid}`);
      return;
    }
    if (inc === 0) throw new H2Error(E_PROTOCOL_ERROR, `WINDOW_UPDATE of 0 on stream ${sid}`, sid);
    if (!s.sendWindow.credit(inc)) throw new H2Error(E_FLOW_CONTROL_ERROR, `stream ${sid} window above 2^31-1`, sid);
    s._flush();
  }

  // --- end of life ---

  #maybeFinish(): void {
    if (!this.#closing || this.#destroyed || this.#streams.size > 0) return;
    this.#w.flush();
    this.socket.end();
    this.#endTimer = setTimeout(() => this.destroy(), 2000);
    this.#endTimer.unref();
  }

  #onSocketEnd(): void {
    // The peer closed its side: no more frames will come.
    if (!this.#destroyed && this.#streams.size === 0) this.#closing = true;
    if (!this.#destroyed) this.destroy();
  }

  #onSocketClose(): void {
    if (!this.#destroyed) this.destroy();
    if (this.#endTimer) clearTimeout(this.#endTimer);
    if (this.#closeEmitted) return;
    this.#closeEmitted = true;
    this.#w.onDrain();
    process.nextTick(() => this.emit('close'));
  }

  #emitError(err: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }
}

