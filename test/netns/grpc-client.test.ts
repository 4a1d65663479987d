/**
 * The agent's lean gRPC client (src/ztunnel/config/grpc-client.ts) on 127.0.0.1 against a real
 * grpc-js server (the controller's library) and, for responses grpc-js never sends, a node:http2
 * server crafting them: trailers-only, HTTP errors, missing trailers, compressed or oversized
 * messages, resets, a peer that stops answering PINGs.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { CertificateAuthority, type IssuedCredentials } from '../../src/controller/ca/ca.ts';
import { CONTROLLER_TLS_NAME } from '../../src/controller/push/wire-records.ts';
import { GRPC, GrpcChannel, type GrpcCall, type GrpcChannelOptions, type GrpcStatus } from '../../src/ztunnel/config/grpc-client.ts';
import { isAmbitError } from '../../src/shared/errors.ts';

let dir = '';
let server: grpc.Server | undefined;
let port = 0;
let crafted: http2.Http2SecureServer | undefined;
let craftedPort = 0;
const craftedSessions = new Set<http2.ServerHttp2Session>();
let mute: tls.Server | undefined;
let mutePort = 0;
let serverCreds: IssuedCredentials;
let agentCreds: IssuedCredentials;
const channels: GrpcChannel[] = [];
const hangs: grpc.ServerUnaryCall<Buffer, Buffer>[] = [];

const raw = { requestSerialize: (b: Buffer) => b, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b };
const method = (name: string, requestStream: boolean, responseStream: boolean) => ({ path: `/test.T/${name}`, requestStream, responseStream, originalName: name, ...raw });

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ambit-grpc-'));
  const ca = await CertificateAuthority.loadOrCreate(dir);
  serverCreds = await ca.issueServerCredentials([CONTROLLER_TLS_NAME, '127.0.0.1']);
  agentCreds = await ca.issueAgentCredentials('n1');

  server = new grpc.Server();
  server.addService({
    Echo: method('Echo', false, false), Fail: method('Fail', false, false), Hang: method('Hang', false, false), Chat: method('Chat', true, true),
  }, {
    Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const auth = String(call.metadata.get('authorization')[0] ?? '');
      cb(null, Buffer.concat([Buffer.from(`${auth}|`), call.request]));
    },
    Fail: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
      cb({ code: grpc.status.PERMISSION_DENIED, details: 'nö: 100% denied\nsecond line' }),
    Hang: (call: grpc.ServerUnaryCall<Buffer, Buffer>) => { hangs.push(call); },
    Chat: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on('data', (m: Buffer) => {
        if (m.toString() === 'boom') call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: 'boom refused' });
        else call.write(Buffer.concat([Buffer.from('re:'), m]));
      });
      call.on('end', () => call.end());
    },
  });
  // no client certificate required, so token-style callers get in too
  const creds = grpc.ServerCredentials.createSsl(Buffer.from(serverCreds.rootsPem), [{ private_key: Buffer.from(serverCreds.keyPem), cert_chain: Buffer.from(serverCreds.certPem) }], false);
  port = await new Promise<number>((resolve, reject) => server!.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p))));

  crafted = http2.createSecureServer({ key: serverCreds.keyPem, cert: serverCreds.certPem });
  crafted.on('session', (s) => { craftedSessions.add(s); s.on('close', () => craftedSessions.delete(s)); });
  crafted.on('stream', craft);
  craftedPort = await listen(crafted);

  // completes TLS and sends its SETTINGS, then reads nothing and answers nothing
  mute = tls.createServer({ key: serverCreds.keyPem, cert: serverCreds.certPem, ALPNProtocols: ['h2'] }, (sock) => {
    sock.on('error', () => {});
    sock.write(Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]));
  });
  mutePort = await listen(mute);
});

after(async () => {
  for (const c of channels) c.close();
  for (const s of craftedSessions) s.destroy();
  if (server) server.forceShutdown();
  await new Promise<void>((r) => (crafted ? crafted.close(() => r()) : r()));
  await new Promise<void>((r) => (mute ? mute.close(() => r()) : r()));
  if (dir) await rm(dir, { recursive: true, force: true });
});

function listen(s: net.Server): Promise<number> {
  return new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve((s.address() as net.AddressInfo).port)));
}

function frame(flag: number, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head[0] = flag;
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

const GRPC_HEADERS = { ':status': 200, 'content-type': 'application/grpc' };

function craft(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
  stream.on('error', () => {});
  switch (headers[':path']) {
    case '/c/trailers-only':
      stream.respond({ ...GRPC_HEADERS, 'grpc-status': '5', 'grpc-message': 'not%20here' }, { endStream: true });
      return;
    case '/c/http-404':
      stream.respond({ ':status': 404 }, { endStream: true });
      return;
    case '/c/no-trailers':
      stream.respond(GRPC_HEADERS);
      stream.end(frame(0, Buffer.from('x')));
      return;
    case '/c/compressed':
      stream.respond(GRPC_HEADERS);
      stream.write(frame(1, Buffer.from('x')));
      return;
    case '/c/too-big':
      stream.respond(GRPC_HEADERS);
      stream.write(frame(0, Buffer.alloc(2048)));
      return;
    case '/c/split': {
      // one message in 1..7-byte DATA frames (the 5-byte prefix split too), a second in one frame, then trailers
      stream.respond(GRPC_HEADERS, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      const one = frame(0, Buffer.from('hello, split world'));
      const two = frame(0, Buffer.from('second'));
      let off = 0;
      const next = (): void => {
        if (off >= one.length) {
          stream.end(two);
          return;
        }
        const n = 1 + (off % 7);
        stream.write(one.subarray(off, off + n), () => setImmediate(next));
        off += n;
      };
      next();
      return;
    }
    case '/c/hold':
      stream.respond(GRPC_HEADERS);
      stream.write(frame(0, Buffer.from('held')));
      return;
    case '/c/rst':
      stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      return;
    default:
      stream.respond({ ...GRPC_HEADERS, 'grpc-status': '12', 'grpc-message': 'unknown path' }, { endStream: true });
  }
}

function channel(o: Partial<GrpcChannelOptions> = {}): GrpcChannel {
  const c = new GrpcChannel({
    address: `127.0.0.1:${port}`, rootsPem: serverCreds.rootsPem, certPem: agentCreds.certPem, keyPem: agentCreds.keyPem,
    servername: CONTROLLER_TLS_NAME, ...o,
  });
  channels.push(c);
  return c;
}

function run(call: GrpcCall): Promise<{ messages: Buffer[]; status: GrpcStatus }> {
  return new Promise((resolve) => {
    const messages: Buffer[] = [];
    call.on('message', (m: Buffer) => messages.push(m));
    call.once('status', (status: GrpcStatus) => resolve({ messages, status }));
  });
}

async function rejectsWith(p: Promise<unknown>, code: number, re: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isAmbitError(err, 'ZT_GRPC_STATUS'), String(err));
    assert.equal(err.details?.grpcStatus, code, err.message);
    assert.match(String(err.details?.grpcMessage), re);
    assert.match(err.message, new RegExp(`grpc-status ${code} `));
    return true;
  });
}

test('unary against grpc-js: a 3 MB message each way, per-call headers read for every call', async () => {
  let n = 0;
  const c = channel({ callHeaders: async () => ({ authorization: `Bearer token-${++n}` }) });
  const big = Buffer.alloc(3 * 1024 * 1024);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
  for (const expectToken of ['token-1', 'token-2']) {
    const reply = await c.unary('/test.T/Echo', big, 10_000);
    const prefix = `Bearer ${expectToken}|`;
    assert.equal(reply.subarray(0, prefix.length).toString(), prefix);
    assert.ok(reply.subarray(prefix.length).equals(big), 'payload intact');
  }
  // an empty message is a message too
  assert.equal((await c.unary('/test.T/Echo', Buffer.alloc(0), 5000)).toString(), 'Bearer token-3|');
});

test('an error status carries grpc-status and the decoded grpc-message', async () => {
  await rejectsWith(channel().unary('/test.T/Fail', Buffer.from('x'), 5000), GRPC.PERMISSION_DENIED, /^nö: 100% denied/);
  await rejectsWith(channel().unary('/test.T/Nope', Buffer.from('x'), 5000), GRPC.UNIMPLEMENTED, /Nope/);
});

test('bidirectional stream: writes made before the connection is up are sent in order; the server\'s error status ends it', async () => {
  const c = channel({ certPem: undefined, keyPem: undefined });
  const call = c.call('/test.T/Chat');
  const done = run(call);
  for (const m of ['a', 'b', 'c']) call.write(Buffer.from(m));
  const first = await new Promise<Buffer>((r) => call.once('message', r));
  assert.equal(first.toString(), 're:a');
  call.write(Buffer.from('boom'));
  const { messages, status } = await done;
  assert.deepEqual(messages.map(String), ['re:a', 're:b', 're:c']);
  assert.deepEqual(status, { code: GRPC.INVALID_ARGUMENT, message: 'boom refused' });

  const ok = c.call('/test.T/Chat');
  const okDone = run(ok);
  ok.write(Buffer.from('z'));
  ok.end();
  assert.deepEqual(await okDone, { messages: [Buffer.from('re:z')], status: { code: GRPC.OK, message: 'OK' } });
});

test('deadline: DEADLINE_EXCEEDED on time, and the server sees the call cancelled', async () => {
  const t0 = Date.now();
  await rejectsWith(channel().unary('/test.T/Hang', Buffer.from('x'), 300), GRPC.DEADLINE_EXCEEDED, /deadline of 300 ms exceeded/);
  assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
  const hang = hangs.at(-1)!;
  const start = Date.now();
  while (!hang.cancelled && Date.now() - start < 2000) await new Promise((r) => setTimeout(r, 10));
  assert.ok(hang.cancelled, 'server call cancelled');
});

test('set-up failures: token unreadable, nothing listening, wrong server name', async () => {
  await rejectsWith(channel({ callHeaders: () => Promise.reject(new Error('cannot read /x/token')) }).unary('/test.T/Echo', Buffer.alloc(1), 5000),
    GRPC.UNAUTHENTICATED, /cannot read \/x\/token/);
  const closed = net.createServer();
  const freePort = await listen(closed);
  await new Promise<void>((r) => closed.close(() => r()));
  await rejectsWith(channel({ address: `127.0.0.1:${freePort}` }).unary('/test.T/Echo', Buffer.alloc(1), 5000), GRPC.UNAVAILABLE, /ECONNREFUSED/);
  await rejectsWith(channel({ servername: 'someone-else' }).unary('/test.T/Echo', Buffer.alloc(1), 5000), GRPC.UNAVAILABLE, /someone-else/);
  assert.throws(() => new GrpcChannel({ address: 'no-port', rootsPem: '', servername: 'x' }), /not HOST:PORT/);
});

test('responses grpc-js never sends: trailers-only, HTTP errors, no trailers, compression, oversize, resets, split frames', async () => {
  const c = channel({ address: `127.0.0.1:${craftedPort}`, maxMessageBytes: 1024 });
  const status = async (path: string) => (await run(withRequest(c.call(path)))).status;
  assert.deepEqual(await status('/c/trailers-only'), { code: 5, message: 'not here' });
  assert.equal((await status('/c/http-404')).code, GRPC.UNIMPLEMENTED);
  assert.match((await status('/c/no-trailers')).message, /without a grpc-status/);
  assert.deepEqual(await status('/c/compressed'), { code: GRPC.INTERNAL, message: 'the server sent a compressed message, but no compression was negotiated' });
  assert.deepEqual(await status('/c/too-big'), { code: GRPC.RESOURCE_EXHAUSTED, message: 'message of 2048 bytes exceeds the limit of 1024' });
  assert.equal((await status('/c/rst')).code, GRPC.UNAVAILABLE);
  const split = await run(withRequest(c.call('/c/split')));
  assert.deepEqual(split.messages.map(String), ['hello, split world', 'second']);
  assert.equal(split.status.code, GRPC.OK);
});

function withRequest(call: GrpcCall): GrpcCall {
  call.write(Buffer.from('req'));
  call.end();
  return call;
}

test('a lost connection: calls on it end UNAVAILABLE, the next call opens a new one', async () => {
  const known = new Set(craftedSessions);
  const ours = () => [...craftedSessions].filter((s) => !known.has(s));
  const c = channel({ address: `127.0.0.1:${craftedPort}` });
  assert.equal((await run(withRequest(c.call('/c/trailers-only')))).status.code, 5);
  const held = c.call('/c/hold');
  const heldDone = run(withRequest(held));
  await new Promise<void>((r) => held.once('message', () => r()));
  const first = ours();
  assert.equal(first.length, 1, 'both calls on one connection');
  first[0].destroy();
  assert.equal((await heldDone).status.code, GRPC.UNAVAILABLE);
  assert.equal((await run(withRequest(c.call('/c/trailers-only')))).status.code, 5);
  assert.equal(ours().filter((s) => s !== first[0]).length, 1, 'a new connection');
});

test('keepalive: a peer that stops answering PINGs is dropped and its calls end UNAVAILABLE', async () => {
  const c = channel({ address: `127.0.0.1:${mutePort}`, keepaliveMs: 200, keepaliveTimeoutMs: 200 });
  const t0 = Date.now();
  const { status } = await run(c.call('/x/never'));
  assert.equal(status.code, GRPC.UNAVAILABLE);
  assert.match(status.message, /keepalive PING not answered within 200 ms/);
  assert.ok(Date.now() - t0 < 3000);
});
