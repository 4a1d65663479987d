/**
 * HPACK (RFC 7541). The decoder is complete — static and dynamic table, Huffman strings, dynamic
 * table size updates, "never indexed" literals — because any compliant peer (Istio's ztunnel,
 * node, Go) may use all of it. The encoder only emits indexed static entries and literals without
 * indexing and without Huffman: it keeps no state, and CONNECT header blocks are tiny.
 */
import { huffmanDecode, HuffmanError } from './huffman.ts';

// prettier-ignore
export const STATIC_TABLE: ReadonlyArray<readonly [string, string]> = [
  [':authority', ''], [':method', 'GET'], [':method', 'POST'], [':path', '/'], [':path', '/index.html'],
  [':scheme', 'http'], [':scheme', 'https'], [':status', '200'], [':status', '204'], [':status', '206'],
  [':status', '304'], [':status', '400'], [':status', '404'], [':status', '500'], ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'], ['accept-language', ''], ['accept-ranges', ''], ['accept', ''],
  ['access-control-allow-origin', ''], ['age', ''], ['allow', ''], ['authorization', ''], ['cache-control', ''],
  ['content-disposition', ''], ['content-encoding', ''], ['content-language', ''], ['content-length', ''],
  ['content-location', ''], ['content-range', ''], ['content-type', ''], ['cookie', ''], ['date', ''],
  ['etag', ''], ['expect', ''], ['expires', ''], ['from', ''], ['host', ''], ['if-match', ''],
  ['if-modified-since', ''], ['if-none-match', ''], ['if-range', ''], ['if-unmodified-since', ''],
  ['last-modified', ''], ['link', ''], ['location', ''], ['max-forwards', ''], ['proxy-authenticate', ''],
  ['proxy-authorization', ''], ['range', ''], ['referer', ''], ['refresh', ''], ['retry-after', ''],
  ['server', ''], ['set-cookie', ''], ['strict-transport-security', ''], ['transfer-encoding', ''],
  ['user-agent', ''], ['vary', ''], ['via', ''], ['www-authenticate', ''],
];

const STATIC_FULL = new Map<string, number>();
const STATIC_NAME = new Map<string, number>();
STATIC_TABLE.forEach(([name, value], i) => {
  STATIC_FULL.set(`${name}\0${value}`, i + 1);
  if (!STATIC_NAME.has(name)) STATIC_NAME.set(name, i + 1);
});

/** Entry overhead per RFC 7541 §4.1. */
const ENTRY_OVERHEAD = 32;

export class HpackError extends Error {
  constructor(message: string) {
    super(`HPACK: ${message}`);
    this.name = 'HpackError';
  }
}

export type HeaderList = Array<[string, string]>;

export class HpackDecoder {
  /** newest first */
  #table: Array<[string, string]> = [];
  #size = 0;
  /** Current maximum set by the peer's size updates. */
  #max: number;
  /** Upper bound we allow (our SETTINGS_HEADER_TABLE_SIZE). */
  #limit: number;
  /** Largest decoded header list (RFC 9113 SETTINGS_MAX_HEADER_LIST_SIZE accounting). */
  #maxListSize: number;

  constructor(tableLimit = 4096, maxHeaderListSize = 64 * 1024) {
    this.#max = tableLimit;
    this.#limit = tableLimit;
    this.#maxListSize = maxHeaderListSize;
  }

  get tableSize(): number { return this.#size; }
  get tableEntries(): ReadonlyArray<readonly [string, string]> { return this.#table; }

  /** Decodes one complete header block. Throws HpackError (a connection error: COMPRESSION_ERROR). */
  decode(block: Buffer): HeaderList {
    const out: HeaderList = [];
    let pos = 0;
    let listSize = 0;
    let sawHeader = false;
    const int = (prefixBits: number): number => {
      if (pos >= block.length) throw new HpackError('truncated integer');
      const mask = (1 << prefixBits) - 1;
      let v = block[pos++] & mask;
      if (v < mask) return v;
      let m = 0;
      for (;;) {
        if (pos >= block.length) throw new HpackError('truncated integer');
        const b = block[pos++];
        v += (b & 0x7f) * 2 ** m;
        m += 7;
        if (v > 0xffffffff) throw new HpackError('integer too large');
        if (!(b & 0x80)) return v;
      }
    };
    const str = (): string => {
      if (pos >= block.length) throw new HpackError('truncated string');
      const huff = (block[pos] & 0x80) !== 0;
      const len = int(7);
      if (pos + len > block.length) throw new HpackError(`string of ${len} bytes runs past the header block`);
      const raw = block.subarray(pos, pos + len);
      pos += len;
      if (!huff) return raw.toString('latin1');
      try {
        return huffmanDecode(raw).toString('latin1');
      } catch (err) {
        if (err instanceof HuffmanError) throw new HpackError(err.message);
        throw err;
      }
    };
    const emit = (name: string, value: string): void => {
      sawHeader = true;
      listSize += name.length + value.length + ENTRY_OVERHEAD;
      if (listSize > this.#maxListSize) throw new HpackError(`header list larger than ${this.#maxListSize} bytes`);
      out.push([name, value]);
    };
    while (pos < block.length) {
      const b = block[pos];
      if (b & 0x80) {
        // indexed header field
        const [name, value] = this.#lookup(int(7));
        emit(name, value);
      } else if (b & 0x40) {
        // literal with incremental indexing
        const idx = int(6);
        const name = idx === 0 ? str() : this.#lookup(idx)[0];
        const value = str();
        this.#insert(name, value);
        emit(name, value);
      } else if (b & 0x20) {
        // dynamic table size update: only at the start of a block (RFC 7541 §4.2)
        if (sawHeader) throw new HpackError('dynamic table size update after a header field');
        const size = int(5);
        if (size > this.#limit) throw new HpackError(`dynamic table size update to ${size} exceeds the limit ${this.#limit}`);
        this.#max = size;
        this.#evict(0);
      } else {
        // literal without indexing (0000) or never indexed (0001)
        const idx = int(4);
        const name = idx === 0 ? str() : this.#lookup(idx)[0];
        emit(name, str());
      }
    }
    return out;
  }

  #lookup(idx: number): readonly [string, string] {
    if (idx === 0) throw new HpackError('index 0');
    if (idx <= STATIC_TABLE.length) return STATIC_TABLE[idx - 1];
    const e = this.#table[idx - STATIC_TABLE.length - 1];
    if (!e) throw new HpackError(`index ${idx} is beyond the dynamic table (${this.#table.length} entries)`);
    return e;
  }

  #insert(name: string, value: string): void {
    const size = name.length + value.length + ENTRY_OVERHEAD;
    if (size > this.#max) {
      // an entry larger than the table empties it (RFC 7541 §4.4)
      this.#table = [];
      this.#size = 0;
      return;
    }
    this.#evict(size);
    this.#table.unshift([name, value]);
    this.#size += size;
  }

  #evict(room: number): void {
    while (this.#size + room > this.#max && this.#table.length > 0) {
      const [n, v] = this.#table.pop()!;
      this.#size -= n.length + v.length + ENTRY_OVERHEAD;
    }
  }
}

/** Stateless encoder: static-table hits are indexed, everything else a literal without indexing. */
export function hpackEncode(headers: ReadonlyArray<readonly [string, string]>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of headers) {
    const full = STATIC_FULL.get(`${name}\0${value}`);
    if (full !== undefined) {
      parts.push(encodeInt(full, 7, 0x80));
      continue;
    }
    const nameIdx = STATIC_NAME.get(name);
    if (nameIdx !== undefined) parts.push(encodeInt(nameIdx, 4, 0x00));
    else parts.push(Buffer.of(0x00), encodeString(name));
    parts.push(encodeString(value));
  }
  return Buffer.concat(parts);
}

export function encodeInt(value: number, prefixBits: number, firstByteFlags: number): Buffer {
  const mask = (1 << prefixBits) - 1;
  if (value < mask) return Buffer.of(firstByteFlags | value);
  const bytes = [firstByteFlags | mask];
  let v = value - mask;
  while (v >= 0x80) {
    bytes.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  bytes.push(v);
  return Buffer.from(bytes);
}

function encodeString(s: string): Buffer {
  const raw = Buffer.from(s, 'latin1');
  return Buffer.concat([encodeInt(raw.length, 7, 0x00), raw]);
}
