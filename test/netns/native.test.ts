/**
 * The native addon against real network namespaces: two netns joined by a veth pair, sockets created
 * inside them, iptables REDIRECT for SO_ORIGINAL_DST, a transparent connect with a spoofed source,
 * error codes, and the SOCK_SEQPACKET hand-off with a netns fd (client in a child process, as the
 * CNI plugin is). Needs root. Set AMBIT_TEST_KEEP=1 to keep the namespaces after a failure.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { fstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import * as native from '../../src/native/index.ts';
import { isAmbitError } from '../../src/shared/errors.ts';

const execFileP = promisify(execFile);
const isRoot = process.getuid?.() === 0;
const NS_RE = /^ambt-nat-(\d+)-[a-z]$/;
const NS_A = `ambt-nat-${process.pid}-a`;
const NS_B = `ambt-nat-${process.pid}-b`;
const PATH_A = `/var/run/netns/${NS_A}`;
const PATH_B = `/var/run/netns/${NS_B}`;
const IP_A = '10.77.0.1';
const IP_B = '10.77.0.2';
const IP6_A = 'fd00:77::1';
const IP6_B = 'fd00:77::2';
const MARK = 0x539;
const NATIVE_FILE = new URL('../../src/native/build/Release/ambit_native.node', import.meta.url).pathname;
const INDEX_TS = new URL('../../src/native/index.ts', import.meta.url).pathname;

function sh(cmd: string, ...args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
function inNs(ns: string, ...args: string[]): string { return sh('ip', 'netns', 'exec', ns, ...args); }
function tryRun(cmd: string, ...args: string[]): void { try { sh(cmd, ...args); } catch { /* already gone */ } }

function pidAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

/** Namespaces of earlier, interrupted runs of this file (their pid is gone). */
function removeLeftovers(): void {
  let names: string[] = [];
  try { names = readdirSync('/var/run/netns'); } catch { return; }
  for (const n of names) {
    const m = NS_RE.exec(n);
    if (m && (Number(m[1]) === process.pid || !pidAlive(Number(m[1])))) tryRun('ip', 'netns', 'del', n);
  }
}

function fdCount(): number { return readdirSync('/proc/self/fd').length; }

async function expectCode(p: Promise<unknown> | (() => unknown), code: string, errno?: string): Promise<Error> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    assert.ok(isAmbitError(err), `expected AmbitError ${code}, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (errno !== undefined) assert.equal(err.details?.errno, errno, err.message);
    return err;
  }
  assert.fail(`expected ${code}${errno ? ` (${errno})` : ''}, nothing was thrown`);
}

/** A server answering "pong:<data>" on each chunk; records peers. */
function echoServer(): { server: net.Server; peers: string[]; sockets: net.Socket[] } {
  const peers: string[] = [];
  const sockets: net.Socket[] = [];
  const server = net.createServer((s) => {
    peers.push(`${s.remoteAddress}`);
    sockets.push(s);
    s.on('data', (d) => s.write(`pong:${d}`));
    s.on('error', () => {});
  });
  return { server, peers, sockets };
}

function roundTrip(s: net.Socket, msg: string): Promise<string> {
  return new Promise((resolve, reject) => {
    s.once('data', (d) => resolve(d.toString()));
    s.once('error', reject);
    s.write(msg);
  });
}

function closeServer(server: net.Server, sockets: net.Socket[] = []): Promise<void> {
  for (const s of sockets) s.destroy();
  return new Promise((resolve) => server.close(() => resolve()));
}

function iptablesPackets(ns: string, bin: string, table: string, chain: string, match: string): number {
  const out = inNs(ns, bin, '-w', '-t', table, '-L', chain, '-v', '-x', '-n');
  const line = out.split('\n').find((l) => l.includes(match));
  assert.ok(line, `no rule matching ${match} in ${ns} ${table}/${chain}:\n${out}`);
  return Number(line.trim().split(/\s+/)[0]);
}

describe('native addon in network namespaces', { skip: isRoot ? false : 'needs root' }, () => {
  let failed = false;
  const guard = (fn: () => Promise<void>) => async () => {
    try { await fn(); } catch (err) {
      failed = true;
      console.error(`# inspect with: ip netns exec ${NS_A} bash   /   ip netns exec ${NS_B} bash` +
        (process.env.AMBIT_TEST_KEEP ? '' : '  (set AMBIT_TEST_KEEP=1 to keep them)'));
      throw err;
    }
  };

  before(() => {
    removeLeftovers();
    sh('ip', 'netns', 'add', NS_A);
    sh('ip', 'netns', 'add', NS_B);
    // veth created directly inside the namespaces: nothing of ours ever lives in the host netns
    sh('ip', 'link', 'add', 'ambtva', 'netns', NS_A, 'type', 'veth', 'peer', 'name', 'ambtvb', 'netns', NS_B);
    for (const [ns, dev, ip, ip6, peer, peer6] of [[NS_A, 'ambtva', IP_A, IP6_A, IP_B, IP6_B], [NS_B, 'ambtvb', IP_B, IP6_B, IP_A, IP6_A]]) {
      inNs(ns, 'ip', 'link', 'set', 'lo', 'up');
      inNs(ns, 'ip', 'addr', 'add', `${ip}/24`, 'dev', dev);
      inNs(ns, 'ip', '-6', 'addr', 'add', `${ip6}/64`, 'dev', dev, 'nodad');
      inNs(ns, 'ip', 'link', 'set', dev, 'up');
      inNs(ns, 'ip', 'route', 'add', 'default', 'via', peer);
      inNs(ns, 'ip', '-6', 'route', 'add', 'default', 'via', peer6);
    }
  });

  after(() => {
    if (failed && process.env.AMBIT_TEST_KEEP) return;
    tryRun('ip', 'netns', 'del', NS_A);
    tryRun('ip', 'netns', 'del', NS_B);
  });

  test('listen in A (by path and by fd), connect from B: data both ways, SO_MARK set', guard(async () => {
    inNs(NS_B, 'iptables', '-w', '-A', 'OUTPUT', '-m', 'mark', '--mark', `${MARK}`, '-j', 'ACCEPT');
    const before = iptablesPackets(NS_B, 'iptables', 'filter', 'OUTPUT', 'mark match 0x539');
    const fdA = native.openNetns(PATH_A);
    const fdB = native.openNetns(PATH_B);
    const srvPath = echoServer();
    const srvFd = echoServer();
    try {
      await native.listen(srvPath.server, { netns: PATH_A, host: IP_A, port: 0 });
      await native.listen(srvFd.server, { netns: fdA, host: '0.0.0.0', port: 0, mark: MARK });
      const portPath = (srvPath.server.address() as net.AddressInfo).port;
      const portFd = (srvFd.server.address() as net.AddressInfo).port;
      assert.match(inNs(NS_A, 'ss', '-ltnH'), new RegExp(`${IP_A.replace(/\./g, '\\.')}:${portPath}\\b`));

      const c1 = await native.connect({ netns: fdB, host: IP_A, port: portPath, mark: MARK });
      const c2 = await native.connect({ netns: PATH_B, host: IP_A, port: portFd, mark: MARK });
      try {
        assert.equal(c1.remoteAddress, IP_A);
        assert.equal(c1.remotePort, portPath);
        assert.equal(c1.localAddress, IP_B);
        assert.equal(native.socketMark(c1), MARK);
        assert.equal(await roundTrip(c1, 'ping1'), 'pong:ping1');
        assert.equal(await roundTrip(c2, 'ping2'), 'pong:ping2');
        assert.deepEqual(srvPath.peers, [IP_B]);
        assert.deepEqual(srvFd.peers, [IP_B]);
        assert.equal(native.socketMark(srvFd.sockets[0]!), MARK, 'accepted sockets inherit the listener mark');
      } finally {
        c1.destroy();
        c2.destroy();
      }
      const afterCount = iptablesPackets(NS_B, 'iptables', 'filter', 'OUTPUT', 'mark match 0x539');
      assert.ok(afterCount > before, `packets with mark 0x539 leaving ${NS_B}: ${before} -> ${afterCount}`);
    } finally {
      await closeServer(srvPath.server, srvPath.sockets);
      await closeServer(srvFd.server, srvFd.sockets);
      native.closeFd(fdA);
      native.closeFd(fdB);
    }
  }));

  test('pool threads return to the agent netns after namespace work', guard(async () => {
    // More concurrent calls than pool threads: a thread left in A or B would bind 127.0.0.1 there,
    // and the host-side net.connect below would then fail.
    const fds = await Promise.all(Array.from({ length: 16 }, (_, i) =>
      i % 2 ? native.listenFd({ host: '127.0.0.1', port: 0 }) : native.listenFd({ netns: PATH_A, host: '127.0.0.1', port: 0 })));
    const servers: net.Server[] = [];
    try {
      for (const [i, fd] of fds.entries()) {
        const s = net.createServer((c) => c.end('x'));
        servers.push(s);
        await new Promise<void>((r) => s.listen({ fd }, r));
        if (i % 2 === 0) continue;
        const port = (s.address() as net.AddressInfo).port;
        const got = await new Promise<string>((resolve, reject) => {
          const c = net.connect(port, '127.0.0.1');
          c.on('data', (d) => resolve(d.toString())).on('error', reject);
        });
        assert.equal(got, 'x');
      }
    } finally {
      await Promise.all(servers.map((s) => closeServer(s)));
    }
  }));

  test('SO_ORIGINAL_DST after iptables REDIRECT (IPv4 and IPv6)', guard(async () => {
    const v4 = echoServer();
    const v6 = echoServer();
    let v4Dst: unknown;
    let v6Dst: unknown;
    v4.server.on('connection', (s) => { v4Dst = native.originalDst(s); });
    v6.server.on('connection', (s) => { v6Dst = native.originalDst(s); });
    try {
      await native.listen(v4.server, { netns: PATH_B, host: '0.0.0.0', port: 0 });
      const p4 = (v4.server.address() as net.AddressInfo).port;
      inNs(NS_B, 'iptables', '-w', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', '198.51.100.7', '-j', 'REDIRECT', '--to-ports', `${p4}`);
      const c = await native.connect({ netns: PATH_B, host: '198.51.100.7', port: 8080 });
      assert.equal(await roundTrip(c, 'a'), 'pong:a');
      c.destroy();
      assert.deepEqual(v4Dst, { address: '198.51.100.7', port: 8080, family: 4 });

      await native.listen(v6.server, { netns: PATH_B, host: '::', port: 0 });
      const p6 = (v6.server.address() as net.AddressInfo).port;
      try {
        inNs(NS_B, 'ip6tables', '-w', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', '2001:db8::7', '-j', 'REDIRECT', '--to-ports', `${p6}`);
      } catch (err) {
        console.error(`# skipping the IPv6 part: ip6tables nat unavailable: ${(err as Error).message}`);
        return;
      }
      const c6 = await native.connect({ netns: PATH_B, host: '2001:db8::7', port: 8443 });
      assert.equal(await roundTrip(c6, 'b'), 'pong:b');
      c6.destroy();
      assert.deepEqual(v6Dst, { address: '2001:db8::7', port: 8443, family: 6 });
      // IPv4 redirected to a dual-stack listener: the conntrack entry is IPv4 (v4-mapped socket)
      inNs(NS_B, 'iptables', '-w', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', '198.51.100.8', '-j', 'REDIRECT', '--to-ports', `${p6}`);
      const cm = await native.connect({ netns: PATH_B, host: '198.51.100.8', port: 8081 });
      assert.equal(await roundTrip(cm, 'c'), 'pong:c');
      cm.destroy();
      assert.deepEqual(v6Dst, { address: '198.51.100.8', port: 8081, family: 4 });
    } finally {
      await closeServer(v4.server, v4.sockets);
      await closeServer(v6.server, v6.sockets);
    }
  }));

  test('transparent connect with a spoofed source: the server sees B as the peer', guard(async () => {
    // The in-pod policy routing documented in src/native/index.ts
    inNs(NS_A, 'iptables', '-w', '-t', 'mangle', '-A', 'PREROUTING', '-m', 'mark', '--mark', '0x539/0xfff', '-j', 'CONNMARK', '--set-xmark', '0x111/0xfff');
    inNs(NS_A, 'iptables', '-w', '-t', 'mangle', '-A', 'OUTPUT', '-m', 'connmark', '--mark', '0x111/0xfff', '-j', 'CONNMARK', '--restore-mark');
    inNs(NS_A, 'ip', 'rule', 'add', 'fwmark', '0x111/0xfff', 'lookup', '100');
    inNs(NS_A, 'ip', 'route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', '100');
    const srv = echoServer();
    try {
      await native.listen(srv.server, { netns: PATH_A, host: IP_A, port: 0 });
      const port = (srv.server.address() as net.AddressInfo).port;
      const c = await native.connect({ netns: PATH_A, host: IP_A, port, transparent: true, freebind: true,
        localAddress: IP_B, mark: MARK, timeoutMs: 3000 });
      try {
        assert.equal(c.localAddress, IP_B);
        assert.equal(await roundTrip(c, 'spoof'), 'pong:spoof');
        assert.deepEqual(srv.peers, [IP_B]);
        assert.equal(srv.sockets[0]!.remotePort, c.localPort);
      } finally {
        c.destroy();
      }
    } finally {
      await closeServer(srv.server, srv.sockets);
    }
  }));

  test('errors: bad netns, refused, timeout without blocking the loop, bad arguments', guard(async () => {
    const missing = '/var/run/netns/ambt-nat-missing-x';
    await expectCode(native.connectFd({ netns: missing, host: IP_A, port: 1 }), 'NATIVE_SETNS', 'ENOENT');
    await expectCode(native.listenFd({ netns: missing, host: '0.0.0.0', port: 0 }), 'NATIVE_SETNS', 'ENOENT');
    await expectCode(() => native.openNetns(missing), 'NATIVE_SETNS', 'ENOENT');
    await expectCode(native.connectFd({ netns: 987654, host: IP_A, port: 1 }), 'NATIVE_SETNS', 'EBADF');

    const refused = await expectCode(native.connectFd({ netns: PATH_B, host: IP_A, port: 9 }), 'NATIVE_CONNECT', 'ECONNREFUSED');
    assert.match(refused.message, /10\.77\.0\.1:9/);
    assert.match(refused.message, new RegExp(NS_B));
    assert.equal((refused as { details?: Record<string, unknown> }).details?.syscall, 'connect');

    // Silently dropped SYNs (a blackhole route fails connect() at once with EINVAL, so DROP instead)
    inNs(NS_B, 'iptables', '-w', '-A', 'OUTPUT', '-d', '203.0.113.9', '-j', 'DROP');
    const fds = fdCount();
    let ticks = 0;
    const timer = setInterval(() => { ticks++; }, 20);
    const t0 = Date.now();
    try {
      await expectCode(native.connectFd({ netns: PATH_B, host: '203.0.113.9', port: 80, timeoutMs: 300 }), 'NATIVE_CONNECT', 'ETIMEDOUT');
    } finally {
      clearInterval(timer);
    }
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 290 && elapsed < 3000, `timeout took ${elapsed} ms`);
    assert.ok(ticks >= 8, `event loop was blocked: only ${ticks} ticks of 20 ms in ${elapsed} ms`);
    assert.equal(fdCount(), fds, 'the fd of a timed-out connect is closed');

    await expectCode(native.connectFd({ host: IP_A, port: 70000 }), 'NATIVE_BAD_ARGUMENT');
    const badHost = await expectCode(native.connectFd({ host: 'example.com', port: 80 }), 'NATIVE_BAD_ARGUMENT');
    assert.match(badHost.message, /host/);
    await expectCode(native.listenFd({ host: '0.0.0.0', port: 0, netns: {} as unknown as string }), 'NATIVE_BAD_ARGUMENT');
    await expectCode(native.connectFd({ host: IP_A, port: 80, localAddress: IP6_B }), 'NATIVE_BAD_ARGUMENT');
    await expectCode(() => native.originalDst(new net.Socket()), 'NATIVE_BAD_ARGUMENT');
    await expectCode(() => native.closeFd(-1), 'NATIVE_BAD_ARGUMENT');

    // The raw binding must never crash on garbage either: TypeErrors naming the argument.
    const raw = createRequire(import.meta.url)(NATIVE_FILE) as Record<string, (...a: unknown[]) => unknown>;
    const garbage: [string, unknown[], RegExp][] = [
      ['listenFd', [], /options/], ['listenFd', [null], /options/], ['connectFd', [{ host: 5, port: 1 }], /host/],
      ['connectFd', [{ host: '1.2.3.4', port: 1.5 }], /port/], ['connectFd', [{ host: '1.2.3.4', port: 1, mark: -1 }], /mark/],
      ['originalDst', ['x'], /fd/], ['openNetns', [7], /path/], ['seqpacketListen', ['/tmp/x'], /argument/],
      ['seqpacketRequest', ['/tmp/x', 'str', [], 10], /data/], ['seqpacketReply', [1, 2, 3], /data/],
      ['seqpacketRequest', ['/tmp/x', Buffer.from('a'), [-1], 10], /fds/],
    ];
    for (const [fn, args, re] of garbage) {
      assert.throws(() => raw[fn]!(...args), (e: Error) => e instanceof TypeError && re.test(e.message), `${fn}(${args.map(String).join(', ')})`);
    }
  }));
});

describe('seqpacket hand-off', { skip: isRoot ? false : 'needs root (netns fds)' }, () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ambt-sp-'));
  const sock = path.join(dir, 'agent.sock');
  const ns = `ambt-nat-${process.pid}-c`;
  after(() => {
    rmSync(dir, { recursive: true, force: true });
    tryRun('ip', 'netns', 'del', ns);
  });

  /** Run a client in a child process (the CNI plugin is one; a sync request here would block our server). */
  async function client(code: string): Promise<Record<string, unknown>> {
    const script = `import * as n from ${JSON.stringify(INDEX_TS)}; import fs from 'node:fs';
      const out = {}; try { ${code} } catch (e) { out.error = { code: e.code, errno: e.details?.errno, message: e.message }; }
      process.stdout.write(JSON.stringify(out));`;
    const { stdout } = await execFileP(process.execPath, ['--input-type=module', '-e', script], { timeout: 30_000 });
    return JSON.parse(stdout) as Record<string, unknown>;
  }

  /** Raw clients misbehaving in ways seqpacketRequest refuses to; async, the server runs on our loop. */
  async function py(code: string): Promise<string> {
    return (await execFileP('python3', ['-c', code], { timeout: 10_000 })).stdout;
  }

  test('message with a netns fd, reply, errors, no fd leaks', async () => {
    removeLeftovers();
    sh('ip', 'netns', 'add', ns);
    const nsPath = `/var/run/netns/${ns}`;
    const received: { ino: number; cloexec: boolean; text: string }[] = [];
    const errors: string[] = [];
    let silent = false;
    const server = native.seqpacketListen(sock, (m) => {
      const text = m.data.toString();
      for (const fd of m.fds) {
        const flags = /flags:\s+(\d+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!;
        received.push({ ino: fstatSync(fd).ino, cloexec: (parseInt(flags, 8) & 0o2000000) !== 0, text });
        native.closeFd(fd);
      }
      if (!silent) m.reply(Buffer.from(`ack:${text}`));
    }, (err) => errors.push(`${err.code}:${String(err.details?.errno)}`));
    try {
      assert.equal(statSync(sock).mode & 0o777, 0o600);
      const nsIno = statSync(nsPath).ino;

      const one = await client(`const fd = fs.openSync(${JSON.stringify(nsPath)}, 'r');
        out.sentIno = fs.fstatSync(fd).ino;
        out.reply = n.seqpacketRequest(${JSON.stringify(sock)}, Buffer.from('add'), [fd], 5000).toString();`);
      assert.equal(one.error, undefined, JSON.stringify(one.error));
      assert.equal(one.reply, 'ack:add');
      assert.equal(received.length, 1);
      assert.equal(received[0]!.ino, one.sentIno);
      assert.equal(received[0]!.ino, nsIno);
      assert.ok(received[0]!.cloexec, 'received fds are CLOEXEC');

      // 100 sequential requests: neither side leaks fds
      const serverFds = fdCount();
      const many = await client(`const fd = fs.openSync(${JSON.stringify(nsPath)}, 'r');
        const before = fs.readdirSync('/proc/self/fd').length;
        for (let i = 0; i < 100; i++) if (n.seqpacketRequest(${JSON.stringify(sock)}, Buffer.from('m' + i), [fd], 5000).toString() !== 'ack:m' + i) throw new Error('bad reply ' + i);
        out.leak = fs.readdirSync('/proc/self/fd').length - before;`);
      assert.equal(many.error, undefined, JSON.stringify(many.error));
      assert.equal(many.leak, 0);
      assert.equal(received.length, 101);
      assert.equal(fdCount(), serverFds, 'server side fd count unchanged');

      // a server that does not answer -> ETIMEDOUT; an oversized message -> the connection is dropped
      silent = true;
      const slow = await client(`n.seqpacketRequest(${JSON.stringify(sock)}, Buffer.from('x'), [], 300);`);
      assert.deepEqual([(slow.error as Record<string, unknown>)?.code, (slow.error as Record<string, unknown>)?.errno], ['NATIVE_SEQPACKET', 'ETIMEDOUT']);
      silent = false;
      const big = await py(`import socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect(${JSON.stringify(sock)}); s.send(b'x' * 70000)
print(repr(s.recv(100)))`);
      assert.equal(big.trim(), "b''", 'oversized message: the server closes the connection without a reply');
      assert.deepEqual(errors, ['NATIVE_SEQPACKET:EMSGSIZE']);
      // a client that hangs up before the reply does not hurt the server
      await py(`import socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect(${JSON.stringify(sock)}); s.send(b'bye'); s.close()`);
      const still = await client(`out.reply = n.seqpacketRequest(${JSON.stringify(sock)}, Buffer.from('again'), [], 5000).toString();`);
      assert.equal(still.reply, 'ack:again');

      // client-side errors
      await expectCode(() => native.seqpacketRequest(path.join(dir, 'nobody.sock'), Buffer.from('x'), [], 1000), 'NATIVE_SEQPACKET', 'ENOENT');
      await expectCode(() => native.seqpacketRequest(sock, Buffer.alloc(70000), [], 1000), 'NATIVE_SEQPACKET', 'EMSGSIZE');
    } finally {
      server.close();
    }
    assert.throws(() => statSync(sock), /ENOENT/, 'close() unlinks the socket path');
    const gone = await client(`n.seqpacketRequest(${JSON.stringify(sock)}, Buffer.from('x'), [], 300);`);
    assert.equal((gone.error as Record<string, unknown>)?.errno, 'ENOENT');
    // a socket file nobody listens on (bound, never listening) -> ECONNREFUSED
    const dead = path.join(dir, 'dead.sock');
    sh('python3', '-c', `import socket; socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET).bind(${JSON.stringify(dead)})`);
    await expectCode(() => native.seqpacketRequest(dead, Buffer.from('x'), [], 1000), 'NATIVE_SEQPACKET', 'ECONNREFUSED');
  });
});
