/**
 * Structured fuzzing of the lean HTTP/2 session over an in-memory duplex pair: frames of every
 * type with random flags, stream ids and payloads, after a valid start. Whatever arrives, the
 * session answers with frames or closes; it never throws out of its data handler.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { duplexPair } from 'node:stream';
import { frame, PREFACE, settingsFrame, headersFrames } from '../../src/ztunnel/h2/frames.ts';
import { hpackEncode } from '../../src/ztunnel/h2/hpack.ts';
import { H2Session } from '../../src/ztunnel/h2/session.ts';

let seed = 12345;
const rnd = (n: number): number => {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed % n;
};
const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => rnd(256)));

function randomFrame(): Buffer {
  const type = rnd(11); // 0..9 known, 10 unknown
  const flags = [0, 1, 4, 5, 8, 0x20, 0x25, rnd(256)][rnd(8)];
  const sid = [0, 1, 2, 3, 5, 7, 2 ** 31 - 1][rnd(7)];
  let payload: Buffer;
  if (type === 1 && rnd(2) === 0) payload = hpackEncode([[':method', 'CONNECT'], [':authority', '10.0.0.1:80']]);
  else payload = bytes([0, 1, 4, 5, 6, 8, 9, 20][rnd(8)]);
  return frame(type, flags, sid, payload);
}

it('random frames after a valid start never make the session throw', async () => {
  const uncaught: unknown[] = [];
  const onUncaught = (e: unknown): void => { uncaught.push(e); };
  process.on('uncaughtException', onUncaught);
  try {
    for (let round = 0; round < 300; round++) {
      const [serverSide, clientSide] = duplexPair();
      const server = new H2Session(serverSide, false);
      server.on('error', () => {});
      server.on('stream', (s) => { s.on('error', () => {}); s.respond({ ':status': 200 }); s.resume(); });
      const answers: Buffer[] = [];
      clientSide.on('data', (b: Buffer) => answers.push(b));
      clientSide.on('error', () => {});
      const frames = [PREFACE, settingsFrame([]), headersFrames(1, hpackEncode([[':method', 'CONNECT'], [':authority', 'a:1']]), false, 16384)];
      for (let i = 0; i < 1 + rnd(12); i++) frames.push(randomFrame());
      clientSide.write(Buffer.concat(frames));
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      assert.ok(answers.length > 0, 'the server answered (SETTINGS at least)');
      server.destroy();
      clientSide.destroy();
    }
  } finally {
    process.off('uncaughtException', onUncaught);
  }
  assert.deepEqual(uncaught, []);
});

it('a client session fed random frames never throws either', async () => {
  for (let round = 0; round < 200; round++) {
    const [clientSide, serverSide] = duplexPair();
    const client = new H2Session(clientSide, true);
    client.on('error', () => {});
    serverSide.on('data', () => {});
    serverSide.on('error', () => {});
    const stream = client.request({ ':method': 'CONNECT', ':authority': 'a:1' });
    stream.on('error', () => {});
    const frames = [settingsFrame([]), headersFrames(1, hpackEncode([[':status', '200']]), false, 16384)];
    for (let i = 0; i < 1 + rnd(12); i++) frames.push(randomFrame());
    serverSide.write(Buffer.concat(frames));
    await new Promise((r) => setImmediate(r));
    client.destroy();
    serverSide.destroy();
  }
});
