/**
 * HPACK's static Huffman code (RFC 7541 Appendix B). The code is canonical, so the code lengths
 * per symbol (0..255, then EOS) define it completely; codes are rebuilt from them at load time.
 * Decoding walks the canonical code bit by bit: header blocks are small and rare next to DATA.
 */

// prettier-ignore
const LENGTHS = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
  6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
  13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
  15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
  20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
  22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
  26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
  20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
  30, // EOS
];

const EOS = 256;
const MAX_LEN = 30;
/** code per symbol (as an unsigned number of LENGTHS[sym] bits) */
const CODES = new Array<number>(257);
/** canonical decoding tables, per code length */
const FIRST_CODE = new Array<number>(MAX_LEN + 2).fill(0);
const COUNT = new Array<number>(MAX_LEN + 2).fill(0);
const OFFSET = new Array<number>(MAX_LEN + 2).fill(0);
const SORTED: number[] = [];

(function build(): void {
  const order = [...LENGTHS.keys()].sort((a, b) => LENGTHS[a] - LENGTHS[b] || a - b);
  let code = 0;
  let prevLen = LENGTHS[order[0]];
  for (const sym of order) {
    const len = LENGTHS[sym];
    code *= 2 ** (len - prevLen);
    prevLen = len;
    CODES[sym] = code;
    if (COUNT[len] === 0) {
      FIRST_CODE[len] = code;
      OFFSET[len] = SORTED.length;
    }
    COUNT[len]++;
    SORTED.push(sym);
    code++;
  }
})();

export class HuffmanError extends Error {}

/** Decodes a Huffman-coded string (RFC 7541 §5.2); throws HuffmanError on EOS or bad padding. */
export function huffmanDecode(src: Buffer): Buffer {
  const out = Buffer.allocUnsafe(Math.ceil((src.length * 8) / 5));
  let o = 0;
  let code = 0;
  let len = 0;
  let ones = true; // bits since the last symbol are all ones (a valid padding prefix of EOS)
  for (let i = 0; i < src.length; i++) {
    const byte = src[i];
    for (let b = 7; b >= 0; b--) {
      const bit = (byte >> b) & 1;
      code = code * 2 + bit;
      len++;
      if (!bit) ones = false;
      if (len >= 5 && COUNT[len] > 0) {
        const idx = code - FIRST_CODE[len];
        if (idx >= 0 && idx < COUNT[len]) {
          const sym = SORTED[OFFSET[len] + idx];
          if (sym === EOS) throw new HuffmanError('Huffman string contains EOS');
          out[o++] = sym;
          code = 0;
          len = 0;
          ones = true;
          continue;
        }
      }
      if (len > MAX_LEN) throw new HuffmanError('invalid Huffman code');
    }
  }
  if (len > 7) throw new HuffmanError(`Huffman padding of ${len} bits (at most 7 allowed)`);
  if (!ones) throw new HuffmanError('Huffman padding is not a prefix of EOS');
  return out.subarray(0, o);
}

export function huffmanEncodedLength(src: Buffer): number {
  let bits = 0;
  for (let i = 0; i < src.length; i++) bits += LENGTHS[src[i]];
  return Math.ceil(bits / 8);
}

/** Huffman-codes `src` (used by tests and available to the encoder; padding with EOS's ones). */
export function huffmanEncode(src: Buffer): Buffer {
  const out = Buffer.allocUnsafe(huffmanEncodedLength(src));
  let acc = 0; // pending bits, fewer than 8 after each flush
  let n = 0;
  let o = 0;
  for (let i = 0; i < src.length; i++) {
    const len = LENGTHS[src[i]];
    const code = CODES[src[i]];
    // feed in pieces of at most 16 bits to keep `acc` within 2^31
    for (let left = len; left > 0; ) {
      const take = Math.min(16, left);
      left -= take;
      acc = acc * 2 ** take + (Math.floor(code / 2 ** left) % 2 ** take);
      n += take;
      while (n >= 8) {
        n -= 8;
        out[o++] = Math.floor(acc / 2 ** n) & 0xff;
        acc %= 2 ** n;
      }
    }
  }
  if (n > 0) out[o++] = ((acc << (8 - n)) | (0xff >> n)) & 0xff;
  return out;
}
