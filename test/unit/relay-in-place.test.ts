/**
 * The zero-copy relay from a plain socket into an HBONE stream (read-regions.ts), over real
 * loopback sockets and the lean HTTP/2 session: bytes arrive intact and in order whether frames go
 * out in place or, when flow control says so, as copies; half-close is carried; every pool region
 * comes back once the sockets are gone; a socket that already reads is left to the plain pipe.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { H2Session } from '../../src/ztunnel/h2/session.ts';
import type { H2SessionOptions } from '../../src/ztunnel/h2/session-options.ts';
import type { H2Stream } from '../../src/ztunnel/h2/stream.ts';
import { outstanding, regionPools, relayIntoStream, relayStats, useReadBuffers } from '../../src/ztunnel/proxy/read-regions.ts';
import type { RegionPools } from '../../src/ztunnel/proxy/read-regions.ts';

interface Rig {
  upstream: H2Stream; // client side of the tunnel: the relay writes into it
  far: H2Stream; // server side of the tunnel: what the relay sent comes out here
  app: net.Socket; // the application's end
  accepted: net.Socket; // our end of the application's connection, accepted paused
  close(): void;
}

async function rig(serverOptions: H2SessionOptions = {}): Promise<Rig> {
  const closers: Array<() => void> = [];
  const h2srv = net.createServer();
  h2srv.listen(0, '127.0.0.1');
  await once(h2srv, 'listening');
  closers.push(() => h2srv.close());
  const serverSession = new Promise<H2Session>((resolve) => {
    h2srv.once('connection', (s) => resolve(new H2Session(s, false, serverOptions)));
  });
  const sock = net.connect((h2srv.address() as net.AddressInfo).port, '127.0.0.1');
  await once(sock, 'connect');
  const client = new H2Session(sock, true);
  const server = await serverSession;
  closers.push(() => { client.destroy(); server.destroy(); });
  client.on('error', () => {});
  server.on('error', () => {});
  const incoming = once(server, 'stream');
  const upstream = client.request({ ':method': 'CONNECT', ':authority': '10.0.0.1:80' });
  const [far] = (await incoming) as [H2Stream];
  far.respond({ ':status': '200' });
  // tests that reset or tear down on purpose look at state, not at these errors
  upstream.on('error', () => {});
  far.on('error', () => {});

  const appSrv = net.createServer({ pauseOnConnect: true, allowHalfOpen: true });
  appSrv.listen(0, '127.0.0.1');
  await once(appSrv, 'listening');
  closers.push(() => appSrv.close());
  const accepted = once(appSrv, 'connection');
  const app = net.connect({ port: (appSrv.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  const [acc] = (await accepted) as [net.Socket];
  closers.push(() => { app.destroy(); acc.destroy(); });
  return { upstream, far, app, accepted: acc, close: () => { for (const c of closers.reverse()) c(); } };
}

/** Reads `s` to its end (optionally slowly: paused for `pauseMs` after every `every` bytes). */
function drain(s: H2Stream, slow?: { every: number; pauseMs: number }): Promise<{ n: number; sha: string }> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    let n = 0;
    let sinceBreak = 0;
    s.on('data', (b: Buffer) => {
      n += b.length;
      h.update(b);
      sinceBreak += b.length;
      if (slow && sinceBreak >= slow.every) {
        sinceBreak = 0;
        s.pause();
        setTimeout(() => s.resume(), slow.pauseMs);
      }
    });
    s.on('end', () => resolve({ n, sha: h.digest('hex') }));
    s.on('error', reject);
  });
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Sends `size` random bytes from the app through the relay and checks that they come out whole. */
async function sendThrough(r: Rig, size: number, slow?: { every: number; pauseMs: number }): Promise<void> {
  const data = randomBytes(size);
  const got = drain(r.far, slow);
  r.app.end(data);
  const res = await got;
  assert.equal(res.n, data.length);
  assert.equal(res.sha, sha(data));
}

/** Closes our end of the app's connection; every region the relay took must come back. */
async function regionsBack(r: Rig, pool: RegionPools): Promise<void> {
  r.accepted.destroy();
  await until(() => outstanding(pool) === 0, 2000, `regions back (${outstanding(pool)} out)`);
}

describe('relayIntoStream: plain socket -> HTTP/2 stream without copies', () => {
  it('24 MiB arrive intact in place, the FIN ends the stream, the reply comes back, every region is returned', async () => {
    const r = await rig();
    try {
      const pool = regionPools(4, 2);
      const before = { ...relayStats };
      assert.equal(relayIntoStream(r.accepted, r.upstream, pool), true);
      r.upstream.pipe(r.accepted); // the other direction as pipeBoth does it
      await sendThrough(r, 24 << 20);
      const inPlace = relayStats.inPlace - before.inPlace;
      const copied = relayStats.copied - before.copied;
      // The first 4 MiB fit the stream window, so at least 16 full-size reads go in place; copies
      // happen only while the window is exhausted (the reader, not the relay, sets the pace).
      assert.ok(inPlace >= 16, `reads sent in place: ${inPlace}, as copies: ${copied}`);
      // half-close: our side ended, the far side still answers and ends
      const reply: Buffer[] = [];
      r.app.on('data', (b: Buffer) => reply.push(b));
      r.far.end(Buffer.from('done'));
      await once(r.app, 'end');
      assert.equal(Buffer.concat(reply).toString(), 'done');
      await regionsBack(r, pool);
    } finally {
      r.close();
    }
  });

  it('small flow-control windows and a slow reader: copies keep order, nothing lost, regions returned', async () => {
    const r = await rig({ initialWindowSize: 65_535, connectionWindow: 65_535 });
    try {
      const pool = regionPools(4, 2);
      const before = { ...relayStats };
      assert.equal(relayIntoStream(r.accepted, r.upstream, pool), true);
      await sendThrough(r, 6 << 20, { every: 256 * 1024, pauseMs: 5 });
      assert.ok(relayStats.copied > before.copied, 'some reads waited for the window and went as copies');
      assert.ok(relayStats.inPlace > before.inPlace, 'some reads went in place');
      await regionsBack(r, pool);
    } finally {
      r.close();
    }
  });

  it('a peer that takes only 16 KiB frames (the HTTP/2 default): reads are capped to one frame, still in place', async () => {
    const r = await rig({ maxFrameSize: 16_384 });
    try {
      const pool = regionPools(4, 2);
      const before = { ...relayStats };
      assert.equal(relayIntoStream(r.accepted, r.upstream, pool), true);
      await sendThrough(r, 4 << 20);
      assert.ok(relayStats.inPlace - before.inPlace >= 256, `in place: ${relayStats.inPlace - before.inPlace} (4 MiB in <= 16 KiB frames)`);
      await regionsBack(r, pool);
    } finally {
      r.close();
    }
  });

  it('the far side resets the stream mid-transfer: the relay stops, regions are returned', async () => {
    const r = await rig();
    try {
      const pool = regionPools(4, 2);
      assert.equal(relayIntoStream(r.accepted, r.upstream, pool), true);
      r.app.on('error', () => {});
      let n = 0;
      r.far.on('data', (b: Buffer) => {
        n += b.length;
        if (n > 1 << 20 && !r.far.destroyed) r.far.close(8); // RST_STREAM CANCEL
      });
      const chunk = randomBytes(1 << 20);
      for (let i = 0; i < 8; i++) r.app.write(chunk);
      await until(() => r.upstream.destroyed, 3000, 'the reset to reach the relay');
      await regionsBack(r, pool); // pipeBoth aborts the other side on a stream error
    } finally {
      r.close();
    }
  });

  it('a socket that already reads is left alone (the caller pipes it)', async () => {
    const r = await rig();
    try {
      r.accepted.resume(); // flowing: node reads into its own buffers now
      await new Promise((res) => setImmediate(res));
      const pool = regionPools(4, 2);
      assert.equal(useReadBuffers(r.accepted, () => Buffer.alloc(16), () => true), false);
      assert.equal(relayIntoStream(r.accepted, r.upstream, pool), false);
      assert.equal(outstanding(pool), 0);
    } finally {
      r.close();
    }
  });
});
