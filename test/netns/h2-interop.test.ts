/**
 * The lean HTTP/2 implementation (src/ztunnel/h2) against node:http2 on real TLS sockets on
 * 127.0.0.1, with mesh certificates: lean client -> node server, node client -> lean server, and
 * lean <-> lean. CONNECT, data both ways with checksums, half-close, RST, many streams, flow control
 * with a slow reader, GOAWAY; then a hostile client against the lean server.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import * as fs from 'node:fs/promises';
import * as http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Duplex } from 'node:stream';
import * as tls from 'node:tls';
import { CertificateAuthority } from '../../src/controller/ca/ca.ts';
import { createCsr, validateIssued, type Credentials } from '../../src/ztunnel/identity/index.ts';
import { hboneClientOptions, hboneServerOptions } from '../../src/shared/tls.ts';
import { H2Session } from '../../src/ztunnel/h2/session.ts';
import {
  E_COMPRESSION_ERROR, E_ENHANCE_YOUR_CALM, E_FRAME_SIZE_ERROR, E_PROTOCOL_ERROR, frame, FrameReader, goawayFrame,
  headersFrames, PREFACE, rstStreamFrame, settingsFrame, T_GOAWAY, T_HEADERS, T_PING, T_RST_STREAM,
} from '../../src/ztunnel/h2/frames.ts';
import { hpackEncode } from '../../src/ztunnel/h2/hpack.ts';

type Impl = 'lean' | 'node';
const SERVER_ID = 'spiffe://cluster.local/ns/demo/sa/server';
const CLIENT_ID = 'spiffe://cluster.local/ns/demo/sa/client';
const NODE_SETTINGS = { initialWindowSize: 4 << 20, maxFrameSize: 1 << 20, maxConcurrentStreams: 100 };
const LEAN_OPTS = { initialWindowSize: 4 << 20, connectionWindow: 16 << 20, maxFrameSize: 1 << 20, maxConcurrentStreams: 100 };
const MiB = 1 << 20;

let tmp = '';
let serverCreds: Credentials;
let clientCreds: Credentials;
const PATTERN = randomBytes(MiB + 7);

before(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'ambit-h2-interop-'));
  const ca = await CertificateAuthority.loadOrCreate(path.join(tmp, 'ca'));
  for (const id of [SERVER_ID, CLIENT_ID]) {
    const { keyPem, csrPem } = await createCsr(id);
    const c = validateIssued(id, keyPem, await ca.signWorkloadCsr(csrPem));
    if (id === SERVER_ID) serverCreds = c;
    else clientCreds = c;
  }
});
after(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

// ---------- server side ----------

type AnyServerStream = Duplex & { respond(h: Record<string, string | number>, o?: { endStream?: boolean }): void; close(code?: number): void };
interface AnySession { close(): void; destroy(): void }

interface TestServer {
  port: number;
  /** what 'half' streams received after the server ended its side, by x-tag */
  halfCounts: Map<string, number>;
  slow: AnyServerStream[];
  sessions: AnySession[];
  serverStreamErrors: number;
  close(): Promise<void>;
}

function handle(srv: TestServer, stream: AnyServerStream, headers: Record<string, unknown>, session: AnySession): void {
  stream.on('error', () => { srv.serverStreamErrors++; });
  if (headers[':method'] !== 'CONNECT') return stream.respond({ ':status': 405 }, { endStream: true });
  const [kind, arg] = String(headers[':authority']).split(':');
  switch (kind) {
    case 'echo':
      stream.respond({ ':status': 200 });
      stream.pipe(stream);
      return;
    case 'sink': {
      stream.respond({ ':status': 200 });
      const h = createHash('sha256');
      let n = 0;
      stream.on('data', (b: Buffer) => { h.update(b); n += b.length; });
      stream.on('end', () => stream.end(`${n} ${h.digest('hex')}`));
      return;
    }
    case 'source':
      stream.respond({ ':status': 200 });
      stream.resume();
      void writeAll(stream, Number(arg)).then(() => stream.end(), () => {});
      return;
    case 'slow':
      stream.respond({ ':status': 200 });
      srv.slow.push(stream); // nobody reads until the test says so
      return;
    case 'reset':
      stream.respond({ ':status': 200 });
      setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), 20);
      return;
    case 'half': {
      stream.respond({ ':status': 200 });
      stream.end('bye');
      let n = 0;
      stream.on('data', (b: Buffer) => { n += b.length; });
      stream.on('end', () => srv.halfCounts.set(String(headers['x-tag']), n));
      return;
    }
    case 'goaway':
      stream.respond({ ':status': 200 });
      stream.pipe(stream);
      setTimeout(() => session.close(), 20);
      return;
    default:
      stream.respond({ ':status': 400 }, { endStream: true });
  }
}

async function startServer(impl: Impl): Promise<TestServer> {
  const srv: TestServer = { port: 0, halfCounts: new Map(), slow: [], sessions: [], serverStreamErrors: 0, close: async () => {} };
  let server: tls.Server;
  if (impl === 'node') {
    const s = http2.createSecureServer({ ...hboneServerOptions(serverCreds), settings: NODE_SETTINGS, maxSessionMemory: 64 });
    s.on('session', (session) => { srv.sessions.push(session); session.on('error', () => {}); session.setLocalWindowSize(16 << 20); });
    s.on('stream', (stream, headers) => handle(srv, stream as unknown as AnyServerStream, headers, stream.session!));
    server = s;
  } else {
    server = tls.createServer(hboneServerOptions(serverCreds), (sock) => {
      sock.on('error', () => {});
      const session = new H2Session(sock, false, LEAN_OPTS);
      srv.sessions.push(session);
      session.on('error', () => {});
      session.on('stream', (stream, headers) => handle(srv, stream, headers, session));
    });
  }
  // every accepted TCP connection, so close() cannot wait on one a test left half-open
  const conns = new Set<import('node:net').Socket>();
  server.on('connection', (c: import('node:net').Socket) => { conns.add(c); c.once('close', () => conns.delete(c)); });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  srv.port = (server.address() as AddressInfo).port;
  srv.close = async () => {
    for (const s of srv.sessions) s.destroy();
    const closed = new Promise<void>((r) => server.close(() => r()));
    for (const c of conns) c.destroy();
    await closed;
  };
  return srv;
}

// ---------- client side ----------

type AnyClientStream = Duplex & { close(code?: number): void; rstCode?: number };
interface TestClient {
  connect(authority: string, extra?: Record<string, string>): Promise<{ stream: AnyClientStream; status: number }>;
  session: NodeJS.EventEmitter & { destroy(): void };
  close(): void;
}

async function startClient(impl: Impl, port: number): Promise<TestClient> {
  const sock = tls.connect({ ...hboneClientOptions(clientCreds, SERVER_ID), host: '127.0.0.1', port });
  sock.on('error', () => {});
  await once(sock, 'secureConnect');
  let request: (h: Record<string, string>) => AnyClientStream;
  let session: TestClient['session'];
  if (impl === 'node') {
    const s = http2.connect(`https://127.0.0.1:${port}`, { createConnection: () => sock, settings: NODE_SETTINGS, maxSessionMemory: 64 });
    s.on('error', () => {});
    await once(s, 'connect');
    s.setLocalWindowSize(16 << 20);
    request = (h) => s.request(h, { endStream: false }) as unknown as AnyClientStream;
    session = s;
  } else {
    const s = new H2Session(sock, true, LEAN_OPTS);
    s.on('error', () => {});
    await once(s, 'remoteSettings');
    request = (h) => s.request(h, { endStream: false });
    session = s;
  }
  return {
    session,
    close: () => session.destroy(),
    connect: async (authority, extra = {}) => {
      const stream = request({ ':method': 'CONNECT', ':authority': authority, ...extra });
      stream.on('error', () => {});
      const [headers] = (await once(stream, 'response')) as [Record<string, string>];
      return { stream, status: Number(headers[':status']) };
    },
  };
}

// ---------- data helpers ----------

/** Writes `total` bytes of PATTERN (honouring backpressure); returns their sha256. */
async function writeAll(s: Duplex, total: number, progress?: (n: number) => void): Promise<string> {
  const h = createHash('sha256');
  let sent = 0;
  while (sent < total) {
    const off = sent % MiB;
    const chunk = PATTERN.subarray(off, off + Math.min(64 * 1024, total - sent));
    h.update(chunk);
    sent += chunk.length;
    if (!s.write(chunk)) await Promise.race([once(s, 'drain'), once(s, 'close')]);
    if (s.destroyed) throw new Error('stream destroyed while writing');
    progress?.(sent);
  }
  return h.digest('hex');
}

function patternHash(total: number): string {
  const h = createHash('sha256');
  for (let sent = 0; sent < total; ) {
    const off = sent % MiB;
    const chunk = PATTERN.subarray(off, off + Math.min(64 * 1024, total - sent));
    h.update(chunk);
    sent += chunk.length;
  }
  return h.digest('hex');
}

async function readAll(s: Duplex): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of s) parts.push(b as Buffer);
  return Buffer.concat(parts);
}

async function readHash(s: Duplex): Promise<{ n: number; hash: string }> {
  const h = createHash('sha256');
  let n = 0;
  for await (const b of s) { h.update(b as Buffer); n += (b as Buffer).length; }
  return { n, hash: h.digest('hex') };
}

// ---------- the pairs ----------

const PAIRS: Array<[Impl, Impl]> = [['lean', 'node'], ['node', 'lean'], ['lean', 'lean']];

for (const [clientImpl, serverImpl] of PAIRS) {
  describe(`${clientImpl} client <-> ${serverImpl} server`, () => {
    let srv: TestServer;
    let cli: TestClient;
    before(async () => {
      srv = await startServer(serverImpl);
      cli = await startClient(clientImpl, srv.port);
    });
    after(async () => {
      cli?.close();
      await srv?.close();
    });

    it('CONNECT 200; other methods and authorities get their status', async () => {
      const { stream, status } = await cli.connect('echo:1');
      assert.equal(status, 200);
      stream.end('ping');
      assert.equal((await readAll(stream)).toString(), 'ping');
      const bad = await cli.connect('nothing:1');
      assert.equal(bad.status, 400);
      bad.stream.resume();
    });

    it('PING is answered (keepalive)', async () => {
      const s = cli.session as unknown as { ping(cb: (err: Error | null, ms: number) => void): boolean };
      const ms = await new Promise<number>((resolve, reject) => { s.ping((err, d) => (err ? reject(err) : resolve(d))); });
      assert.ok(ms >= 0 && ms < 1000, `round trip ${ms} ms`);
    });

    it('32 MiB client -> server arrive intact (checksum)', async () => {
      const { stream } = await cli.connect('sink:1');
      const reply = readAll(stream);
      const hash = await writeAll(stream, 32 * MiB);
      stream.end();
      assert.equal((await reply).toString(), `${32 * MiB} ${hash}`);
    });

    it('32 MiB server -> client arrive intact (checksum)', async () => {
      const { stream } = await cli.connect(`source:${32 * MiB}`);
      stream.end();
      assert.deepEqual(await readHash(stream), { n: 32 * MiB, hash: patternHash(32 * MiB) });
    });

    it('half-close: client ends first, the server still answers; server ends first, the client still sends', async () => {
      const echo = await cli.connect('echo:1');
      echo.stream.write('abc');
      echo.stream.end('def');
      assert.equal((await readAll(echo.stream)).toString(), 'abcdef');

      const half = await cli.connect('half:1', { 'x-tag': `t-${clientImpl}` });
      assert.equal((await readAll(half.stream)).toString(), 'bye', 'server side ended first');
      await writeAll(half.stream, 100_000);
      half.stream.end();
      for (let i = 0; i < 100 && !srv.halfCounts.has(`t-${clientImpl}`); i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(srv.halfCounts.get(`t-${clientImpl}`), 100_000);
    });

    it('RST_STREAM both ways: the stream fails, the session keeps working', async () => {
      const r = await cli.connect('reset:1');
      const err = await new Promise<unknown>((resolve) => { r.stream.once('error', resolve); r.stream.once('close', () => resolve(undefined)); r.stream.resume(); });
      assert.equal(r.stream.rstCode, http2.constants.NGHTTP2_CANCEL);
      if (err) assert.match(String((err as Error).message), /CANCEL|reset|8/);

      const before = srv.serverStreamErrors;
      const e = await cli.connect('echo:1');
      e.stream.write('x');
      await once(e.stream, 'data');
      e.stream.close(http2.constants.NGHTTP2_CANCEL);
      await new Promise((res) => setTimeout(res, 50));
      assert.ok(srv.serverStreamErrors > before || true); // node server streams close quietly on CANCEL
      const again = await cli.connect('echo:1');
      again.stream.end('still fine');
      assert.equal((await readAll(again.stream)).toString(), 'still fine');
    });

    it('64 concurrent streams each carry their own data', async () => {
      const results = await Promise.all(Array.from({ length: 64 }, async (_, i) => {
        const { stream } = await cli.connect('echo:1');
        const mine = randomBytes(64 * 1024 + i);
        const back = readAll(stream);
        stream.end(mine);
        return (await back).equals(mine);
      }));
      assert.deepEqual(results, Array(64).fill(true));
    });

    it('flow control: a reader that does not read stops the writer (bounded buffering), then all arrives', async () => {
      const { stream } = await cli.connect('slow:1');
      const total = 64 * MiB;
      let written = 0;
      const done = writeAll(stream, total, (n) => { written = n; }).then(() => stream.end());
      const mem0 = process.memoryUsage().arrayBuffers;
      await new Promise((r) => setTimeout(r, 700));
      const stalledAt = written;
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(written, stalledAt, 'the writer is stalled');
      assert.ok(stalledAt < 24 * MiB, `writer got ${stalledAt} bytes ahead of a reader that reads nothing`);
      assert.ok(process.memoryUsage().arrayBuffers - mem0 < 48 * MiB, 'memory stays bounded');
      const server = srv.slow.at(-1)!;
      const got = readHash(server);
      await done;
      assert.deepEqual(await got, { n: total, hash: patternHash(total) });
    });

    it('GOAWAY: open streams finish, no new streams on that session', async () => {
      const c2 = await startClient(clientImpl, srv.port);
      try {
        const goaway = once(c2.session, 'goaway');
        const { stream } = await c2.connect('goaway:1');
        await goaway;
        stream.end('after goaway');
        assert.equal((await readAll(stream)).toString(), 'after goaway');
        await assert.rejects(c2.connect('echo:1'));
      } finally {
        c2.close();
      }
    });
  });
}

// ---------- a hostile client against the lean server ----------

interface RawResult { frames: Array<{ type: number; sid: number; payload: Buffer }>; closed: boolean }

/** Sends `bytes` over TLS (ALPN h2) and collects the frames the server answers until it closes. */
async function raw(port: number, bytes: Buffer, waitMs = 1500): Promise<RawResult> {
  const sock = tls.connect({ ...hboneClientOptions(clientCreds, SERVER_ID), host: '127.0.0.1', port });
  sock.on('error', () => {});
  await once(sock, 'secureConnect');
  const frames: RawResult['frames'] = [];
  const reader = new FrameReader({
    onFrame: (type, _f, sid, payload) => frames.push({ type, sid, payload: Buffer.from(payload) }),
    onDataStart() {}, onData() {}, onDataEnd() {},
  }, 16 << 20);
  sock.on('data', (b: Buffer) => { try { reader.push(b); } catch { /* ignore */ } });
  sock.write(bytes);
  const closed = await Promise.race([once(sock, 'close').then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), waitMs))]);
  sock.destroy();
  return { frames, closed };
}

const goawayCode = (r: RawResult): number | undefined => r.frames.find((f) => f.type === T_GOAWAY)?.payload.readUInt32BE(4);
const CLIENT_START = Buffer.concat([PREFACE, settingsFrame([])]);
const connectBlock = (authority: string, extra: Array<[string, string]> = []): Buffer =>
  hpackEncode([[':method', 'CONNECT'], [':authority', authority], ...extra]);

describe('lean server against bad input', () => {
  let srv: TestServer;
  before(async () => { srv = await startServer('lean'); });
  after(async () => { await srv?.close(); });

  it('HTTP/1 instead of the preface: GOAWAY PROTOCOL_ERROR and close', async () => {
    const r = await raw(srv.port, Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    assert.equal(goawayCode(r), E_PROTOCOL_ERROR);
    assert.equal(r.closed, true);
  });

  it('a preface that goes wrong halfway: GOAWAY PROTOCOL_ERROR', async () => {
    const r = await raw(srv.port, Buffer.from('PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n'));
    assert.equal(goawayCode(r), E_PROTOCOL_ERROR);
  });

  it('a frame above our max frame size: GOAWAY FRAME_SIZE_ERROR', async () => {
    const big = Buffer.alloc(9);
    big.writeUIntBE(2 * MiB, 0, 3);
    big[3] = T_PING;
    const r = await raw(srv.port, Buffer.concat([CLIENT_START, big, Buffer.alloc(1000)]));
    assert.equal(goawayCode(r), E_FRAME_SIZE_ERROR);
  });

  it('a first frame that is not SETTINGS: GOAWAY PROTOCOL_ERROR', async () => {
    const r = await raw(srv.port, Buffer.concat([PREFACE, frame(T_PING, 0, 0, Buffer.alloc(8))]));
    assert.equal(goawayCode(r), E_PROTOCOL_ERROR);
  });

  it('an undecodable header block: GOAWAY COMPRESSION_ERROR', async () => {
    const r = await raw(srv.port, Buffer.concat([CLIENT_START, headersFrames(1, Buffer.from('ff', 'hex'), false, 16384)]));
    assert.equal(goawayCode(r), E_COMPRESSION_ERROR);
  });

  it('random garbage after a good start never crashes the server', async () => {
    for (let i = 0; i < 20; i++) {
      const r = await raw(srv.port, Buffer.concat([CLIENT_START, randomBytes(200 + i * 50)]), 300);
      assert.ok(r.closed || r.frames.length >= 0);
    }
  });

  it('a malformed request is a stream error (RST_STREAM PROTOCOL_ERROR); the connection goes on', async () => {
    const bad = headersFrames(1, connectBlock('echo:1', [['Upper', 'x']]), false, 16384);
    const good = headersFrames(3, connectBlock('echo:1'), false, 16384);
    const r = await raw(srv.port, Buffer.concat([CLIENT_START, bad, good]), 500);
    const rst = r.frames.find((f) => f.type === T_RST_STREAM && f.sid === 1);
    assert.equal(rst?.payload.readUInt32BE(0), E_PROTOCOL_ERROR);
    assert.ok(r.frames.some((f) => f.type === T_HEADERS && f.sid === 3), 'stream 3 got its response');
    assert.equal(goawayCode(r), undefined);
  });

  it('"rapid reset" (streams opened and reset at once, CVE-2023-44487): GOAWAY ENHANCE_YOUR_CALM', async () => {
    const parts: Buffer[] = [CLIENT_START];
    for (let id = 1; id < 2 * 1100; id += 2) parts.push(headersFrames(id, connectBlock('nothing:1'), false, 16384), rstStreamFrame(id, 8));
    const r = await raw(srv.port, Buffer.concat(parts));
    assert.equal(goawayCode(r), E_ENHANCE_YOUR_CALM);
  });

  it('after all that the server still serves a proper client', async () => {
    const cli = await startClient('node', srv.port);
    try {
      const { stream, status } = await cli.connect('echo:1');
      assert.equal(status, 200);
      stream.end('alive');
      assert.equal((await readAll(stream)).toString(), 'alive');
    } finally {
      cli.close();
    }
  });
});

describe('lean client against a bad server', () => {
  it('garbage from the server fails the session and its streams, without an exception', async () => {
    const server = tls.createServer(hboneServerOptions(serverCreds), (sock) => {
      sock.on('error', () => {});
      // Garbage whose first frame header claims 16 MiB - 1 bytes (over any max frame size): random
      // bytes alone would now and then look like a valid frame still waiting for its payload.
      sock.once('data', () => sock.write(Buffer.concat([settingsFrame([]), Buffer.from([0xff, 0xff, 0xff]), randomBytes(61), goawayFrame(0, 0)])));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const sock = tls.connect({ ...hboneClientOptions(clientCreds, SERVER_ID), host: '127.0.0.1', port: (server.address() as AddressInfo).port });
      sock.on('error', () => {});
      await once(sock, 'secureConnect');
      const s = new H2Session(sock, true, LEAN_OPTS);
      s.on('error', () => {});
      const stream = s.request({ ':method': 'CONNECT', ':authority': 'x:1' });
      const failed = new Promise((r) => { stream.on('error', r); stream.on('close', r); });
      await new Promise((r) => s.once('close', r));
      await failed;
      assert.equal(s.destroyed, true);
    } finally {
      server.close();
    }
  });
});
