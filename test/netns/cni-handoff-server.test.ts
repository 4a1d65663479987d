/**
 * PodHandoffServer over a real SOCK_SEQPACKET socket: validation replies, refusals, fd ownership
 * (nothing leaks when a pod is refused or a message is malformed), and it survives garbage.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, fstatSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PodHandoffServer } from '../../src/ztunnel/pod-handoff-server.ts';
import { closeFd } from '../../src/native/index.ts';
import { AmbitError } from '../../src/shared/errors.ts';

const CLIENT = join(import.meta.dirname, 'cni-handoff-client.ts');

function request(socket: string, message: string, ...fdPaths: string[]): Promise<any> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLIENT, socket, message, ...fdPaths], { encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`client failed: ${stderr}`));
      resolve(stdout.startsWith('ERROR ') ? { clientError: stdout.slice(6) } : JSON.parse(stdout));
    });
  });
}

const openFds = () => new Set(readdirSync('/proc/self/fd'));

describe('PodHandoffServer', () => {
  let dir = '';
  let socket = '';
  let server: PodHandoffServer;
  const calls: string[] = [];
  let mode: 'accept' | 'refuse' | 'crash' = 'accept';
  const add = (extra: Record<string, unknown> = {}) => JSON.stringify({
    op: 'add', uid: 'u1', name: 'web', namespace: 'mesh', serviceAccount: 'sa', ips: ['10.1.0.5'], netnsPath: '/proc/self/ns/net', ...extra,
  });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ambt-handoff-'));
    socket = join(dir, 'run', 'ztunnel.sock');
    server = new PodHandoffServer({
      socketPath: socket,
      onAdd: async (pod) => {
        calls.push(`add ${pod.uid} ino=${fstatSync(pod.netnsFd).ino === statSync('/proc/self/ns/net').ino}`);
        if (mode === 'refuse') throw new AmbitError('ZT_POD_LISTEN', 'cannot open listeners');
        if (mode === 'crash') throw new TypeError('boom');
        closeFd(pod.netnsFd);
      },
      onDel: async (uid) => { calls.push(`del ${uid}`); },
    });
    await server.start();
  });

  after(async () => {
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('accepts a valid add with the netns fd, and a del', async () => {
    assert.deepEqual(await request(socket, add(), '/proc/self/ns/net'), { ok: true });
    assert.deepEqual(await request(socket, JSON.stringify({ op: 'del', uid: 'u1' })), { ok: true });
    assert.deepEqual(calls.splice(0), ['add u1 ino=true', 'del u1']);
  });

  it('rejects malformed requests naming the problem, and closes every fd it got', async () => {
    const before = openFds();
    const cases: [string, string[], RegExp][] = [
      ['{not json', ['/proc/self/ns/net'], /not valid JSON/],
      ['[1,2]', [], /JSON object/],
      [JSON.stringify({ op: 'frob', uid: 'u' }), [], /"op"/],
      [add({ serviceAccount: undefined }), ['/proc/self/ns/net'], /"serviceAccount"/],
      [add({ uid: '' }), ['/proc/self/ns/net'], /"uid"/],
      [add({ ips: '10.1.0.5' }), ['/proc/self/ns/net'], /"ips"/],
      [add(), [], /exactly one netns fd \(got 0\)/],
      [add(), ['/proc/self/ns/net', '/proc/self/ns/net'], /exactly one netns fd \(got 2\)/],
      [JSON.stringify({ op: 'del' }), ['/proc/self/ns/net'], /"uid"/],
      ['\u0001\u0002binary\uffff', [], /not valid JSON/],
    ];
    for (const [msg, fds, re] of cases) {
      const r = await request(socket, msg, ...fds);
      assert.equal(r.ok, false, msg);
      assert.equal(r.code, 'HANDOFF_BAD_REQUEST', msg);
      assert.match(r.message, re, msg);
    }
    assert.deepEqual(calls, [], 'no handler may run for a malformed request');
    assert.deepEqual([...openFds()].filter((fd) => !before.has(fd)), [], 'received fds must be closed');
  });

  it('a refusing or failing onAdd becomes {ok:false, code, message}; the fd is closed', async () => {
    const before = openFds();
    mode = 'refuse';
    assert.deepEqual(await request(socket, add(), '/proc/self/ns/net'), { ok: false, code: 'ZT_POD_LISTEN', message: 'cannot open listeners' });
    mode = 'crash';
    const r = await request(socket, add(), '/proc/self/ns/net');
    assert.equal(r.code, 'HANDOFF_FAILED');
    assert.match(r.message, /boom/);
    mode = 'accept';
    assert.deepEqual([...openFds()].filter((fd) => !before.has(fd)), []);
    // Still serving.
    assert.deepEqual(await request(socket, add({ uid: 'u2' }), '/proc/self/ns/net'), { ok: true });
    assert.deepEqual(calls.splice(0), ['add u1 ino=true', 'add u1 ino=true', 'add u2 ino=true']);
  });

  it('replaces a stale socket on start, removes it on close', async () => {
    const s2 = new PodHandoffServer({ socketPath: socket, onAdd: async (p) => closeFd(p.netnsFd), onDel: async () => {} });
    await server.close();
    assert.equal(existsSync(socket), false);
    assert.deepEqual(await request(socket, add(), '/proc/self/ns/net'), { clientError: 'NATIVE_SEQPACKET' });
    // A socket file nobody listens on, as a crashed agent leaves behind.
    execFileSync('python3', ['-c', `import socket;s=socket.socket(socket.AF_UNIX,socket.SOCK_SEQPACKET);s.bind(${JSON.stringify(socket)})`]);
    assert.equal(existsSync(socket), true);
    assert.deepEqual(await request(socket, add(), '/proc/self/ns/net'), { clientError: 'NATIVE_SEQPACKET' });
    await s2.start();
    assert.deepEqual(await request(socket, add(), '/proc/self/ns/net'), { ok: true });
    server = s2;
  });
});
