/**
 * HTTP/2 frame codec (RFC 9113 §4, §6): frame constants, encoders for the frames the HBONE
 * session sends, and FrameReader, an incremental parser over the TLS socket's read chunks.
 * FrameReader hands out subarray views of those chunks (no copy) and streams DATA payloads piece
 * by piece as they arrive, so a 1 MiB DATA frame is never reassembled; only control frames that
 * straddle two chunks are copied into one buffer.
 */

export const FRAME_HEADER_LEN = 9;
export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export const T_DATA = 0x0;
export const T_HEADERS = 0x1;
export const T_PRIORITY = 0x2;
export const T_RST_STREAM = 0x3;
export const T_SETTINGS = 0x4;
export const T_PUSH_PROMISE = 0x5;
export const T_PING = 0x6;
export const T_GOAWAY = 0x7;
export const T_WINDOW_UPDATE = 0x8;
export const T_CONTINUATION = 0x9;

export const F_END_STREAM = 0x1;
export const F_ACK = 0x1;
export const F_END_HEADERS = 0x4;
export const F_PADDED = 0x8;
export const F_PRIORITY = 0x20;

export const S_HEADER_TABLE_SIZE = 0x1;
export const S_ENABLE_PUSH = 0x2;
export const S_MAX_CONCURRENT_STREAMS = 0x3;
export const S_INITIAL_WINDOW_SIZE = 0x4;
export const S_MAX_FRAME_SIZE = 0x5;
export const S_MAX_HEADER_LIST_SIZE = 0x6;
export const S_ENABLE_CONNECT_PROTOCOL = 0x8;

export const E_NO_ERROR = 0x0;
export const E_PROTOCOL_ERROR = 0x1;
export const E_INTERNAL_ERROR = 0x2;
export const E_FLOW_CONTROL_ERROR = 0x3;
export const E_SETTINGS_TIMEOUT = 0x4;
export const E_STREAM_CLOSED = 0x5;
export const E_FRAME_SIZE_ERROR = 0x6;
export const E_REFUSED_STREAM = 0x7;
export const E_CANCEL = 0x8;
export const E_COMPRESSION_ERROR = 0x9;
export const E_CONNECT_ERROR = 0xa;
export const E_ENHANCE_YOUR_CALM = 0xb;
export const E_INADEQUATE_SECURITY = 0xc;
export const E_HTTP_1_1_REQUIRED = 0xd;

const ERROR_NAMES = [
  'NO_ERROR', 'PROTOCOL_ERROR', 'INTERNAL_ERROR', 'FLOW_CONTROL_ERROR', 'SETTINGS_TIMEOUT', 'STREAM_CLOSED',
  'FRAME_SIZE_ERROR', 'REFUSED_STREAM', 'CANCEL', 'COMPRESSION_ERROR', 'CONNECT_ERROR', 'ENHANCE_YOUR_CALM',
  'INADEQUATE_SECURITY', 'HTTP_1_1_REQUIRED',
];

export function errorCodeName(code: number): string {
  return ERROR_NAMES[code] ?? `0x${code.toString(16)}`;
}

export const DEFAULT_MAX_FRAME = 16_384;
export const MAX_ALLOWED_FRAME = 16_777_215;
export const MAX_WINDOW = 2 ** 31 - 1;

/**
 * A protocol violation. `streamId` 0 (or a connection-scoped cause) makes it a connection error
 * (GOAWAY); otherwise a stream error (RST_STREAM on that stream only).
 */
export class H2Error extends Error {
  readonly h2code: number;
  readonly streamId: number;
  constructor(h2code: number, message: string, streamId = 0) {
    super(`${errorCodeName(h2code)}: ${message}`);
    this.name = 'H2Error';
    this.h2code = h2code;
    this.streamId = streamId;
  }
}

export function writeFrameHeader(buf: Buffer, off: number, length: number, type: number, flags: number, streamId: number): void {
  buf[off] = (length >>> 16) & 0xff;
  buf[off + 1] = (length >>> 8) & 0xff;
  buf[off + 2] = length & 0xff;
  buf[off + 3] = type;
  buf[off + 4] = flags;
  buf.writeUInt32BE(streamId & 0x7fffffff, off + 5);
}

export function frameHeader(length: number, type: number, flags: number, streamId: number): Buffer {
  const b = Buffer.allocUnsafe(FRAME_HEADER_LEN);
  writeFrameHeader(b, 0, length, type, flags, streamId);
  return b;
}

/** A whole frame in one buffer. */
export function frame(type: number, flags: number, streamId: number, payload?: Buffer): Buffer {
  const len = payload ? payload.length : 0;
  const b = Buffer.allocUnsafe(FRAME_HEADER_LEN + len);
  writeFrameHeader(b, 0, len, type, flags, streamId);
  if (payload) payload.copy(b, FRAME_HEADER_LEN);
  return b;
}

export function settingsFrame(settings: ReadonlyArray<readonly [number, number]>): Buffer {
  const p = Buffer.allocUnsafe(settings.length * 6);
  settings.forEach(([id, value], i) => {
    p.writeUInt16BE(id, i * 6);
    p.writeUInt32BE(value >>> 0, i * 6 + 2);
  });
  return frame(T_SETTINGS, 0, 0, p);
}

export function settingsAck(): Buffer {
  return frame(T_SETTINGS, F_ACK, 0);
}

export function pingFrame(payload: Buffer, ack: boolean): Buffer {
  return frame(T_PING, ack ? F_ACK : 0, 0, payload);
}

export function goawayFrame(lastStreamId: number, code: number, debug = ''): Buffer {
  const d = Buffer.from(debug.slice(0, 256), 'utf8');
  const p = Buffer.allocUnsafe(8 + d.length);
  p.writeUInt32BE(lastStreamId & 0x7fffffff, 0);
  p.writeUInt32BE(code >>> 0, 4);
  d.copy(p, 8);
  return frame(T_GOAWAY, 0, 0, p);
}

export function rstStreamFrame(streamId: number, code: number): Buffer {
  const p = Buffer.allocUnsafe(4);
  p.writeUInt32BE(code >>> 0, 0);
  return frame(T_RST_STREAM, 0, streamId, p);
}

export function windowUpdateFrame(streamId: number, increment: number): Buffer {
  const p = Buffer.allocUnsafe(4);
  p.writeUInt32BE(increment & 0x7fffffff, 0);
  return frame(T_WINDOW_UPDATE, 0, streamId, p);
}

/** HEADERS (+ CONTINUATION frames when the block exceeds the peer's max frame size), one buffer. */
export function headersFrames(streamId: number, block: Buffer, endStream: boolean, maxFrame: number): Buffer {
  const n = Math.max(1, Math.ceil(block.length / maxFrame));
  const out = Buffer.allocUnsafe(block.length + n * FRAME_HEADER_LEN);
  let off = 0;
  for (let i = 0, pos = 0; i < n; i++) {
    const len = Math.min(maxFrame, block.length - pos);
    const last = i === n - 1;
    const type = i === 0 ? T_HEADERS : T_CONTINUATION;
    const flags = (last ? F_END_HEADERS : 0) | (i === 0 && endStream ? F_END_STREAM : 0);
    writeFrameHeader(out, off, len, type, flags, streamId);
    block.copy(out, off + FRAME_HEADER_LEN, pos, pos + len);
    off += FRAME_HEADER_LEN + len;
    pos += len;
  }
  return out;
}

/** What FrameReader reports. DATA arrives as start / pieces / end; every other frame whole. */
export interface FrameSink {
  /** A non-DATA frame; `payload` may be a view into a read chunk: copy what must outlive the call. */
  onFrame(type: number, flags: number, streamId: number, payload: Buffer): void;
  /** A DATA frame header; `length` counts padding (flow control charges the whole frame). */
  onDataStart(streamId: number, flags: number, length: number): void;
  /** Payload bytes of the current DATA frame (padding excluded). */
  onData(streamId: number, chunk: Buffer): void;
  /** The current DATA frame is complete (END_STREAM applies now). */
  onDataEnd(streamId: number, flags: number): void;
}

const ST_HEAD = 0;
const ST_BODY = 1;
const ST_DATA_PADLEN = 2;
const ST_DATA = 3;
const ST_DATA_PAD = 4;

/**
 * Incremental frame parser. `push(chunk)` parses everything available and calls the sink; a sink
 * may throw H2Error (the session turns it into RST_STREAM or GOAWAY) or call stop().
 */
export class FrameReader {
  #sink: FrameSink;
  /** Largest frame payload we accept (what we advertised as SETTINGS_MAX_FRAME_SIZE). */
  maxFrameSize: number;
  #state = ST_HEAD;
  #head = Buffer.alloc(FRAME_HEADER_LEN);
  #headLen = 0;
  #len = 0;
  #type = 0;
  #flags = 0;
  #sid = 0;
  #body: Buffer | undefined;
  #bodyLen = 0;
  #dataLeft = 0;
  #padLeft = 0;
  #stopped = false;

  constructor(sink: FrameSink, maxFrameSize: number) {
    this.#sink = sink;
    this.maxFrameSize = maxFrameSize;
  }

  stop(): void {
    this.#stopped = true;
  }

  push(chunk: Buffer): void {
    let pos = 0;
    const n = chunk.length;
    while (pos < n && !this.#stopped) {
      switch (this.#state) {
        case ST_HEAD: {
          if (this.#headLen === 0 && n - pos >= FRAME_HEADER_LEN) {
            this.#header(chunk, pos);
            pos += FRAME_HEADER_LEN;
          } else {
            const take = Math.min(FRAME_HEADER_LEN - this.#headLen, n - pos);
            chunk.copy(this.#head, this.#headLen, pos, pos + take);
            this.#headLen += take;
            pos += take;
            if (this.#headLen < FRAME_HEADER_LEN) break;
            this.#headLen = 0;
            this.#header(this.#head, 0);
          }
          break;
        }
        case ST_BODY: {
          const need = this.#len - this.#bodyLen;
          if (this.#bodyLen === 0 && n - pos >= need) {
            const payload = chunk.subarray(pos, pos + need);
            pos += need;
            this.#state = ST_HEAD;
            this.#sink.onFrame(this.#type, this.#flags, this.#sid, payload);
            break;
          }
          this.#body ??= Buffer.allocUnsafe(this.#len);
          const take = Math.min(need, n - pos);
          chunk.copy(this.#body, this.#bodyLen, pos, pos + take);
          this.#bodyLen += take;
          pos += take;
          if (this.#bodyLen === this.#len) {
            const payload = this.#body;
            this.#body = undefined;
            this.#bodyLen = 0;
            this.#state = ST_HEAD;
            this.#sink.onFrame(this.#type, this.#flags, this.#sid, payload);
          }
          break;
        }
        case ST_DATA_PADLEN: {
          const pad = chunk[pos++];
          if (pad > this.#len - 1) throw new H2Error(E_PROTOCOL_ERROR, `DATA padding ${pad} >= frame length ${this.#len}`);
          this.#padLeft = pad;
          this.#dataLeft = this.#len - 1 - pad;
          this.#afterDataHead();
          break;
        }
        case ST_DATA: {
          const take = Math.min(this.#dataLeft, n - pos);
          const piece = chunk.subarray(pos, pos + take);
          pos += take;
          this.#dataLeft -= take;
          if (this.#dataLeft === 0) this.#state = this.#padLeft > 0 ? ST_DATA_PAD : ST_HEAD;
          this.#sink.onData(this.#sid, piece);
          if (this.#state === ST_HEAD) this.#sink.onDataEnd(this.#sid, this.#flags);
          break;
        }
        case ST_DATA_PAD: {
          const take = Math.min(this.#padLeft, n - pos);
          pos += take;
          this.#padLeft -= take;
          if (this.#padLeft === 0) {
            this.#state = ST_HEAD;
            this.#sink.onDataEnd(this.#sid, this.#flags);
          }
          break;
        }
      }
    }
  }

  #header(b: Buffer, o: number): void {
    const len = (b[o] << 16) | (b[o + 1] << 8) | b[o + 2];
    this.#len = len;
    this.#type = b[o + 3];
    this.#flags = b[o + 4];
    this.#sid = b.readUInt32BE(o + 5) & 0x7fffffff;
    if (len > this.maxFrameSize) {
      throw new H2Error(E_FRAME_SIZE_ERROR, `frame of ${len} bytes (type ${this.#type}) exceeds our max frame size ${this.maxFrameSize}`);
    }
    if (this.#type !== T_DATA) {
      if (len === 0) {
        this.#sink.onFrame(this.#type, this.#flags, this.#sid, EMPTY);
      } else {
        this.#state = ST_BODY;
        this.#bodyLen = 0;
      }
      return;
    }
    this.#sink.onDataStart(this.#sid, this.#flags, len);
    if (this.#flags & F_PADDED) {
      if (len === 0) throw new H2Error(E_PROTOCOL_ERROR, 'padded DATA frame without a pad length');
      this.#state = ST_DATA_PADLEN;
      return;
    }
    this.#padLeft = 0;
    this.#dataLeft = len;
    this.#afterDataHead();
  }

  #afterDataHead(): void {
    if (this.#dataLeft > 0) this.#state = ST_DATA;
    else if (this.#padLeft > 0) this.#state = ST_DATA_PAD;
    else {
      this.#state = ST_HEAD;
      this.#sink.onDataEnd(this.#sid, this.#flags);
    }
  }
}

const EMPTY = Buffer.alloc(0);
