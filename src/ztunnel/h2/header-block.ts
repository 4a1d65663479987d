/**
 * Header blocks (RFC 9113 §4.3, §6.2, §6.10): a HEADERS frame's fragment (padding and priority
 * fields stripped) plus any CONTINUATION frames, assembled into one block for the HPACK decoder.
 */
import {
  E_ENHANCE_YOUR_CALM, E_FRAME_SIZE_ERROR, E_PROTOCOL_ERROR, F_END_HEADERS, F_PADDED, F_PRIORITY, H2Error,
} from './frames.ts';

/** A complete header block and the HEADERS frame's flags (END_STREAM matters to the caller). */
export interface HeaderBlock {
  sid: number;
  flags: number;
  block: Buffer;
  /** The frame made the stream depend on itself: a stream error once the block is decoded. */
  selfDependent: boolean;
}

export class HeaderBlockAssembler {
  readonly #maxBlock: number;
  #pending: { sid: number; flags: number; parts: Buffer[]; size: number; selfDependent: boolean } | undefined;

  constructor(maxBlock: number) {
    this.#maxBlock = maxBlock;
  }

  /** True while a block awaits CONTINUATION (no other frame may come in between). */
  get pending(): boolean {
    return this.#pending !== undefined;
  }

  /** A HEADERS frame: the whole block when END_HEADERS is set, else undefined until CONTINUATION ends it. */
  onHeaders(flags: number, sid: number, payload: Buffer): HeaderBlock | undefined {
    if (sid === 0) throw new H2Error(E_PROTOCOL_ERROR, 'HEADERS on stream 0');
    let start = 0;
    let end = payload.length;
    if (flags & F_PADDED) {
      if (payload.length < 1) throw new H2Error(E_FRAME_SIZE_ERROR, 'padded HEADERS without pad length');
      start = 1;
      end -= payload[0];
    }
    let selfDependent = false;
    if (flags & F_PRIORITY) {
      if (end - start < 5) throw new H2Error(E_FRAME_SIZE_ERROR, 'HEADERS priority fields truncated');
      // Decode the block all the same (the HPACK state must stay in step), then fail the stream.
      selfDependent = (payload.readUInt32BE(start) & 0x7fffffff) === sid;
      start += 5;
    }
    if (end < start) throw new H2Error(E_PROTOCOL_ERROR, 'HEADERS padding exceeds the payload');
    const fragment = payload.subarray(start, end);
    if (flags & F_END_HEADERS) return { sid, flags, block: fragment, selfDependent };
    // Copies: the frame reader hands out views of chunks that are reused.
    this.#pending = { sid, flags, parts: [Buffer.from(fragment)], size: fragment.length, selfDependent };
    return undefined;
  }

  /** A CONTINUATION frame: the whole block once END_HEADERS arrives. */
  onContinuation(flags: number, sid: number, payload: Buffer): HeaderBlock | undefined {
    const p = this.#pending;
    if (!p || p.sid !== sid) throw new H2Error(E_PROTOCOL_ERROR, `CONTINUATION on stream ${sid} without a HEADERS before it`);
    p.size += payload.length;
    if (p.size > this.#maxBlock) throw new H2Error(E_ENHANCE_YOUR_CALM, `header block larger than ${this.#maxBlock} bytes`);
    p.parts.push(Buffer.from(payload));
    if (!(flags & F_END_HEADERS)) return undefined;
    this.#pending = undefined;
    return { sid, flags: p.flags, block: Buffer.concat(p.parts), selfDependent: p.selfDependent };
  }
}
