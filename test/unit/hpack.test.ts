import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { encodeInt, HpackDecoder, HpackError, hpackEncode } from '../../src/ztunnel/h2/hpack.ts';
import { huffmanDecode, huffmanEncode, HuffmanError } from '../../src/ztunnel/h2/huffman.ts';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** One step of an RFC 7541 Appendix C sequence: wire bytes, decoded list, table afterwards. */
interface Step { wire: string; headers: Array<[string, string]>; table: Array<[string, string]>; size: number }

function runSequence(steps: Step[], tableSize = 4096): void {
  const d = new HpackDecoder(tableSize);
  for (const [i, s] of steps.entries()) {
    assert.deepEqual(d.decode(hex(s.wire)), s.headers, `step ${i + 1} headers`);
    assert.deepEqual(d.tableEntries, s.table, `step ${i + 1} dynamic table`);
    assert.equal(d.tableSize, s.size, `step ${i + 1} table size`);
  }
}

const REQ1: Array<[string, string]> = [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com']];
const REQ2: Array<[string, string]> = [...REQ1, ['cache-control', 'no-cache']];
const REQ3: Array<[string, string]> = [[':method', 'GET'], [':scheme', 'https'], [':path', '/index.html'], [':authority', 'www.example.com'], ['custom-key', 'custom-value']];
const T1: Array<[string, string]> = [[':authority', 'www.example.com']];
const T2: Array<[string, string]> = [['cache-control', 'no-cache'], ...T1];
const T3: Array<[string, string]> = [['custom-key', 'custom-value'], ...T2];

const DATE1 = 'Mon, 21 Oct 2013 20:13:21 GMT';
const DATE2 = 'Mon, 21 Oct 2013 20:13:22 GMT';
const LOC = 'https://www.example.com';
const COOKIE = 'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1';
const RESP1: Array<[string, string]> = [[':status', '302'], ['cache-control', 'private'], ['date', DATE1], ['location', LOC]];
const RESP2: Array<[string, string]> = [[':status', '307'], ['cache-control', 'private'], ['date', DATE1], ['location', LOC]];
const RESP3: Array<[string, string]> = [[':status', '200'], ['cache-control', 'private'], ['date', DATE2], ['location', LOC], ['content-encoding', 'gzip'], ['set-cookie', COOKIE]];
const RT1: Array<[string, string]> = [['location', LOC], ['date', DATE1], ['cache-control', 'private'], [':status', '302']];
const RT2: Array<[string, string]> = [[':status', '307'], ['location', LOC], ['date', DATE1], ['cache-control', 'private']];
const RT3: Array<[string, string]> = [['set-cookie', COOKIE], ['content-encoding', 'gzip'], ['date', DATE2]];

describe('HPACK decoder: RFC 7541 Appendix C', () => {
  it('C.2.1 literal with indexing', () => {
    runSequence([{ wire: '400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572', headers: [['custom-key', 'custom-header']], table: [['custom-key', 'custom-header']], size: 55 }]);
  });
  it('C.2.2 literal without indexing', () => {
    runSequence([{ wire: '040c 2f73 616d 706c 652f 7061 7468', headers: [[':path', '/sample/path']], table: [], size: 0 }]);
  });
  it('C.2.3 literal never indexed', () => {
    runSequence([{ wire: '1008 7061 7373 776f 7264 0673 6563 7265 74', headers: [['password', 'secret']], table: [], size: 0 }]);
  });
  it('C.2.4 indexed', () => {
    runSequence([{ wire: '82', headers: [[':method', 'GET']], table: [], size: 0 }]);
  });
  it('C.3 requests without Huffman', () => {
    runSequence([
      { wire: '8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d', headers: REQ1, table: T1, size: 57 },
      { wire: '8286 84be 5808 6e6f 2d63 6163 6865', headers: REQ2, table: T2, size: 110 },
      { wire: '8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65', headers: REQ3, table: T3, size: 164 },
    ]);
  });
  it('C.4 requests with Huffman', () => {
    runSequence([
      { wire: '8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff', headers: REQ1, table: T1, size: 57 },
      { wire: '8286 84be 5886 a8eb 1064 9cbf', headers: REQ2, table: T2, size: 110 },
      { wire: '8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf', headers: REQ3, table: T3, size: 164 },
    ]);
  });
  it('C.5 responses without Huffman, table size 256 (eviction)', () => {
    runSequence([
      {
        wire: `4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d
               546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d`,
        headers: RESP1, table: RT1, size: 222,
      },
      { wire: '4803 3330 37c1 c0bf', headers: RESP2, table: RT2, size: 222 },
      {
        wire: `88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 7738 666f
               6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630
               303b 2076 6572 7369 6f6e 3d31`,
        headers: RESP3, table: RT3, size: 215,
      },
    ], 256);
  });
  it('C.6 responses with Huffman, table size 256 (eviction)', () => {
    runSequence([
      {
        wire: `4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7
               8f0b 97c8 e9ae 82ae 43d3`,
        headers: RESP1, table: RT1, size: 222,
      },
      { wire: '4883 640e ffc1 c0bf', headers: RESP2, table: RT2, size: 222 },
      {
        wire: `88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335
               dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07`,
        headers: RESP3, table: RT3, size: 215,
      },
    ], 256);
  });
});

describe('HPACK decoder: size updates and malformed input', () => {
  it('a size update at the start of a block shrinks (and evicts) the table', () => {
    const d = new HpackDecoder(4096);
    d.decode(hex('400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572'));
    assert.equal(d.tableSize, 55);
    assert.deepEqual(d.decode(Buffer.concat([encodeInt(0, 5, 0x20), hex('82')])), [[':method', 'GET']]);
    assert.equal(d.tableSize, 0);
    assert.throws(() => d.decode(hex('be')), HpackError, 'the evicted entry is gone');
  });
  it('refuses a size update above our limit, or after a header field', () => {
    assert.throws(() => new HpackDecoder(4096).decode(encodeInt(4097, 5, 0x20)), /exceeds the limit/);
    assert.throws(() => new HpackDecoder(4096).decode(Buffer.concat([hex('82'), encodeInt(0, 5, 0x20)])), /after a header field/);
  });
  it('malformed blocks throw HpackError, never anything else', () => {
    const bad = [
      '80', // index 0
      'ff', // truncated integer
      'ff ff ff ff ff ff 7f', // integer too large
      'c0', // index beyond the tables (dynamic table empty: 62+)
      '40 0a 6375', // string runs past the block
      '00', // literal, name string missing
      '04', // literal indexed name, value missing
      '00 81 ff 00', // Huffman name of one byte that is all padding (8 bits > 7)
      '00 84 ff ff ff ff 00', // Huffman EOS inside the string
    ];
    for (const b of bad) assert.throws(() => new HpackDecoder().decode(hex(b)), HpackError, b);
  });
  it('random garbage never throws anything but HpackError', () => {
    let seed = 7;
    const rnd = (): number => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % 256;
    for (let i = 0; i < 2000; i++) {
      const b = Buffer.from(Array.from({ length: 1 + (i % 40) }, rnd));
      try {
        new HpackDecoder().decode(b);
      } catch (err) {
        assert.ok(err instanceof HpackError, `${b.toString('hex')}: ${String(err)}`);
      }
    }
  });
  it('header list size is bounded', () => {
    const big = hpackEncode([['x-big', 'v'.repeat(70_000)]]);
    assert.throws(() => new HpackDecoder(4096, 64 * 1024).decode(big), /header list larger/);
  });
});

describe('Huffman code', () => {
  it('round-trips every byte value', () => {
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    assert.deepEqual(huffmanDecode(huffmanEncode(all)), all);
    assert.deepEqual(huffmanDecode(huffmanEncode(Buffer.from('spiffe://cluster.local/ns/demo/sa/x'))).toString(), 'spiffe://cluster.local/ns/demo/sa/x');
  });
  it('matches the RFC examples', () => {
    assert.equal(huffmanEncode(Buffer.from('www.example.com')).toString('hex'), 'f1e3c2e5f23a6ba0ab90f4ff');
    assert.equal(huffmanEncode(Buffer.from('no-cache')).toString('hex'), 'a8eb10649cbf');
  });
  it('rejects bad padding', () => {
    assert.throws(() => huffmanDecode(hex('f1e3c2e5f23a6ba0ab90f4fe')), HuffmanError); // padding with a 0 bit
  });
});

describe('HPACK encoder', () => {
  it('round-trips through the decoder; static hits are one byte', () => {
    const h: Array<[string, string]> = [[':method', 'CONNECT'], [':authority', '10.0.0.1:8080'], [':status', '200'], ['forwarded', 'for="10.0.0.2:1234"'], ['baggage', 'k8s.namespace.name=demo']];
    assert.deepEqual(new HpackDecoder().decode(hpackEncode(h)), h);
    assert.deepEqual(hpackEncode([[':status', '200']]), Buffer.of(0x88));
  });
  it('integers use the prefix and continuation bytes (RFC 7541 C.1)', () => {
    assert.deepEqual(encodeInt(10, 5, 0), Buffer.of(0x0a));
    assert.deepEqual(encodeInt(1337, 5, 0), Buffer.of(0x1f, 0x9a, 0x0a));
    assert.deepEqual(encodeInt(42, 8, 0), Buffer.of(0x2a));
  });
});
