/**
 * The lite HTTP/1.1 server (src/shared/http-lite.ts) on real loopback sockets: keep-alive,
 * pipelining in order, HEAD, POST bodies, limits, malformed input, timeouts, failing handlers.
 */
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLiteServer, type LiteHandler, type LiteServer, type LiteServerOptions } from '../../src/shared/http-lite.ts';
import { setLogLevel } from '../../src/shared/log.ts';

setLogLevel('off', 'test.http');

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function serve(handler: LiteHandler, opts: LiteServerOptions = {}): Promise<{ server: LiteServer; port: number }> {
  const server = createLiteServer(handler, { name: 'test.http', ...opts });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }));
  const a = server.address();
  return { server, port: a && typeof a === 'object' ? a.port : 0 };
}

interface Reply { status: number; headers: Record<string, string>; body: string }

/** A raw client: writes bytes, reads responses one by one (Content-Length framing). */
class Client {
  readonly socket: Socket;
  #buf = Buffer.alloc(0);
  #ended = false;
  #wake: (() => void) | undefined;

  constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => { this.#buf = Buffer.concat([this.#buf, d]); this.#wake?.(); });
    socket.on('end', () => { this.#ended = true; this.#wake?.(); });
    socket.on('close', () => { this.#ended = true; this.#wake?.(); });
    socket.on('error', () => {});
  }

  static async open(port: number): Promise<Client> {
    const s = connect(port, '127.0.0.1');
    await once(s, 'connect');
    const c = new Client(s);
    cleanups.push(() => void s.destroy());
    return c;
  }

  send(text: string | Buffer): void {
    this.socket.write(text);
  }

  async #more(): Promise<void> {
    if (this.#ended) throw new Error(`connection closed; unread: ${JSON.stringify(this.#buf.toString('latin1'))}`);
    await new Promise<void>((resolve) => { this.#wake = resolve; });
    this.#wake = undefined;
  }

  async read(opts: { head?: boolean } = {}): Promise<Reply> {
    let end: number;
    while ((end = this.#buf.indexOf('\r\n\r\n')) < 0) await this.#more();
    const lines = this.#buf.toString('latin1', 0, end).split('\r\n');
    this.#buf = this.#buf.subarray(end + 4);
    const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(lines[0])?.[1]);
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
    }
    const length = opts.head ? 0 : Number(headers['content-length'] ?? 0);
    while (this.#buf.length < length) await this.#more();
    const body = this.#buf.toString('utf8', 0, length);
    this.#buf = this.#buf.subarray(length);
    return { status, headers, body };
  }

  /** Resolves when the server closed its side (FIN or reset); false if it did not within `ms`. */
  async closedWithin(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.#ended) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await Promise.race([new Promise<void>((resolve) => { this.#wake = resolve; }), sleep(left)]);
    }
    return true;
  }

  get unread(): number { return this.#buf.length; }
}

const echo: LiteHandler = (req) => ({
  status: 200,
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ method: req.method, path: req.path, target: req.target, q: Object.fromEntries(req.query), body: req.body.toString(), version: req.version, host: req.headers.host }),
});

test('keep-alive: several requests on one connection; query string parsed', async () => {
  const { port } = await serve(echo);
  const c = await Client.open(port);
  c.send('GET /a?x=1&y=two%20words HTTP/1.1\r\nHost: h\r\n\r\n');
  const r1 = await c.read();
  assert.equal(r1.status, 200);
  assert.equal(r1.headers['content-type'], 'application/json');
  assert.equal(r1.headers.connection, undefined);
  assert.deepEqual(JSON.parse(r1.body), { method: 'GET', path: '/a', target: '/a?x=1&y=two%20words', q: { x: '1', y: 'two words' }, body: '', version: '1.1', host: 'h' });
  c.send('GET /b HTTP/1.1\r\nHost: h\r\n\r\n');
  assert.equal(JSON.parse((await c.read()).body).path, '/b');
  assert.equal(await c.closedWithin(100), false, 'the connection stays open');
});

test('fetch (undici) talks to it', async () => {
  const { port } = await serve(echo);
  const res = await fetch(`http://127.0.0.1:${port}/p?k=v`, { method: 'POST', body: 'hello' });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { method: 'POST', path: '/p', target: '/p?k=v', q: { k: 'v' }, body: 'hello', version: '1.1', host: `127.0.0.1:${port}` });
});

test('pipelined requests are answered in order even when the first is slowest', async () => {
  const { port } = await serve(async (req) => {
    await sleep(req.path === '/1' ? 80 : req.path === '/2' ? 20 : 0);
    return { status: 200, body: `answer ${req.path}` };
  });
  const c = await Client.open(port);
  c.send('GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\n\r\n');
  assert.equal((await c.read()).body, 'answer /1');
  assert.equal((await c.read()).body, 'answer /2');
  assert.equal((await c.read()).body, 'answer /3');
});

test('HEAD: Content-Length of the body, no body; the connection goes on', async () => {
  const { port } = await serve(() => ({ status: 200, headers: { 'content-type': 'text/plain' }, body: 'twelve bytes' }));
  const c = await Client.open(port);
  c.send('HEAD /x HTTP/1.1\r\n\r\n');
  const h = await c.read({ head: true });
  assert.equal(h.status, 200);
  assert.equal(h.headers['content-length'], '12');
  c.send('GET /x HTTP/1.1\r\n\r\n');
  assert.equal((await c.read()).body, 'twelve bytes');
  assert.equal(c.unread, 0);
});

test('POST body by Content-Length, split across writes; Expect: 100-continue', async () => {
  const { port } = await serve(echo);
  const c = await Client.open(port);
  c.send('POST /logging?level=debug HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234');
  await sleep(30);
  c.send('56789');
  const r = JSON.parse((await c.read()).body);
  assert.deepEqual([r.method, r.q.level, r.body], ['POST', 'debug', '0123456789']);
  c.send('POST /up HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n');
  assert.equal((await c.read()).status, 100);
  c.send('data');
  assert.equal(JSON.parse((await c.read()).body).body, 'data');
});

test('Connection: close and HTTP/1.0 close after the answer', async () => {
  const { port } = await serve(echo);
  const a = await Client.open(port);
  a.send('GET / HTTP/1.1\r\nConnection: close\r\n\r\n');
  assert.equal((await a.read()).headers.connection, 'close');
  assert.ok(await a.closedWithin(1000));
  const b = await Client.open(port);
  b.send('GET / HTTP/1.0\r\n\r\n');
  assert.equal(JSON.parse((await b.read()).body).version, '1.0');
  assert.ok(await b.closedWithin(1000));
});

test('a client that sends its request and FIN at once still gets the answer', async () => {
  const { port } = await serve(async () => { await sleep(30); return { status: 200, body: 'late' }; });
  const c = await Client.open(port);
  c.socket.end('GET / HTTP/1.1\r\n\r\n');
  assert.equal((await c.read()).body, 'late');
  assert.ok(await c.closedWithin(1000));
});

test('malformed input: 400 and closed; the server keeps serving others', async () => {
  const { port } = await serve(echo);
  for (const bad of ['GARBAGE\r\n\r\n', 'GET /x HTTP/1.1 extra\r\n\r\n', 'GET x HTTP/1.1\r\n\r\n', 'GET / HTTP/1.1\r\nno colon\r\n\r\n',
    'GET / HTTP/1.1\r\nBad Name: v\r\n\r\n', 'GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n', 'POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n',
    'POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n']) {
    const c = await Client.open(port);
    c.send(bad);
    const r = await c.read();
    assert.equal(r.status, 400, JSON.stringify(bad));
    assert.equal(r.headers.connection, 'close');
    assert.ok(await c.closedWithin(1000), `closed after ${JSON.stringify(bad)}`);
  }
  const v = await Client.open(port);
  v.send('GET / HTTP/2.0\r\n\r\n');
  assert.equal((await v.read()).status, 505);
  const ok = await Client.open(port);
  ok.send('GET /fine HTTP/1.1\r\n\r\n');
  assert.equal((await ok.read()).status, 200);
});

test('limits: oversize head 431, oversize body 413, Transfer-Encoding 411', async () => {
  const { port } = await serve(echo, { maxHeadBytes: 1024, maxBodyBytes: 100 });
  const a = await Client.open(port);
  a.send(`GET / HTTP/1.1\r\nX-Big: ${'a'.repeat(2000)}`); // no end of head yet: refused by size alone
  assert.equal((await a.read()).status, 431);
  assert.ok(await a.closedWithin(1000));
  const whole = await Client.open(port);
  whole.send(`GET / HTTP/1.1\r\nX-Big: ${'a'.repeat(2000)}\r\n\r\n`); // complete, but over the limit
  assert.equal((await whole.read()).status, 431);
  const b = await Client.open(port);
  b.send('POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n');
  assert.equal((await b.read()).status, 413);
  const c = await Client.open(port);
  c.send('POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n');
  assert.equal((await c.read()).status, 411);
  assert.ok(await c.closedWithin(1000));
  const d = await Client.open(port);
  d.send(`POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n${'b'.repeat(100)}`);
  assert.equal(JSON.parse((await d.read()).body).body.length, 100);
});

test('slow client: 408 when a request is not complete in time; idle connections close', async () => {
  const { port } = await serve(echo, { requestTimeoutMs: 150, idleTimeoutMs: 300 });
  const slow = await Client.open(port);
  const t0 = Date.now();
  slow.send('GET / HTTP/1.1\r\nHost: a');
  const tick = setInterval(() => slow.socket.write('a'), 20); // trickling bytes does not extend the deadline
  cleanups.push(() => clearInterval(tick));
  assert.equal((await slow.read()).status, 408);
  clearInterval(tick);
  assert.ok(Date.now() - t0 < 1000);
  const idle = await Client.open(port);
  assert.equal(await idle.closedWithin(100), false);
  assert.ok(await idle.closedWithin(1000), 'an idle connection is closed');
  const kept = await Client.open(port);
  kept.send('GET / HTTP/1.1\r\n\r\n');
  assert.equal((await kept.read()).status, 200);
  assert.ok(await kept.closedWithin(1000), 'idle after an answer too');
});

test('a failing handler gets 500 and the connection and server go on', async () => {
  const { port } = await serve(async (req) => {
    if (req.path === '/throw') throw new Error('boom');
    if (req.path === '/reject') return Promise.reject(new Error('nope'));
    if (req.path === '/bad-header') return { status: 200, headers: { 'x-bad': 'a\r\nb' }, body: '' };
    if (req.path === '/nothing') return undefined as never;
    return { status: 200, body: 'ok' };
  });
  const syncThrow = await serve(() => { throw new Error('sync boom'); });
  const c = await Client.open(port);
  for (const p of ['/throw', '/reject', '/bad-header', '/nothing']) {
    c.send(`GET ${p} HTTP/1.1\r\n\r\n`);
    const r = await c.read();
    assert.equal(r.status, 500, p);
    assert.equal(r.body, 'internal error\n');
  }
  c.send('GET /ok HTTP/1.1\r\n\r\n');
  assert.equal((await c.read()).body, 'ok');
  const s = await Client.open(syncThrow.port);
  s.send('GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n');
  assert.equal((await s.read()).status, 500);
  assert.equal((await s.read()).status, 500);
});

test('close() ends idle keep-alive connections and lets a busy one finish its answer', async () => {
  let release: () => void = () => {};
  const { server, port } = await serve((req) => req.path === '/slow'
    ? new Promise((resolve) => { release = () => resolve({ status: 200, body: 'done' }); })
    : { status: 200, body: 'quick' });
  const idle = await Client.open(port);
  idle.send('GET / HTTP/1.1\r\n\r\n');
  await idle.read();
  const busy = await Client.open(port);
  busy.send('GET /slow HTTP/1.1\r\n\r\n');
  await sleep(30);
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  assert.ok(await idle.closedWithin(1000), 'the idle connection is closed');
  release();
  const r = await busy.read();
  assert.deepEqual([r.body, r.headers.connection], ['done', 'close']);
  assert.ok(await busy.closedWithin(1000));
  await closed;
});

test('random bytes and vanishing clients never escape as exceptions', async () => {
  let answered = 0;
  const { port } = await serve(async () => { await sleep(20); answered++; return { status: 200, body: 'x' }; });
  for (let i = 0; i < 50; i++) {
    const c = await Client.open(port);
    c.send(i % 2 ? randomBytes(64 + i * 40) : Buffer.concat([Buffer.from('GET / HTTP/1.1\r\n'), randomBytes(i * 10), Buffer.from('\r\n\r\n')]));
    if (i % 5 === 0) c.socket.destroy();
  }
  const gone = await Client.open(port);
  gone.send('GET / HTTP/1.1\r\n\r\n');
  await sleep(5);
  gone.socket.destroy(); // the handler answers a closed socket: dropped
  await sleep(60);
  const c = await Client.open(port);
  c.send('GET / HTTP/1.1\r\n\r\n');
  assert.equal((await c.read()).status, 200);
  assert.ok(answered >= 2);
});
