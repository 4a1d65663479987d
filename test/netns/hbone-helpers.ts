/**
 * Helpers for the data-path netns tests: namespaces with veths, a tiny app server listening inside
 * a netns (native listen), a client that talks through the in-pod redirection, tcpdump capture.
 */
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as net from 'node:net';
import * as native from '../../src/native/index.ts';

export function sh(cmd: string, ...args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export function netnsAdd(name: string): string {
  netnsDel(name); // leftover of an interrupted run
  sh('ip', 'netns', 'add', name);
  sh('ip', '-n', name, 'link', 'set', 'lo', 'up');
  return `/var/run/netns/${name}`;
}

export function netnsDel(name: string): void {
  try { sh('ip', 'netns', 'del', name); } catch { /* not there */ }
}

/** A zombie counts as dead (an interrupted run's process may wait a while to be reaped). */
function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Deletes netns named by `re` (group 1 = pid of the run that made them) whose run is gone. */
export function removeLeftovers(re: RegExp): void {
  let names: string[] = [];
  try { names = readdirSync('/var/run/netns'); } catch { return; }
  for (const n of names) {
    const m = re.exec(n);
    if (m && (Number(m[1]) === process.pid || !pidAlive(Number(m[1])))) netnsDel(n);
  }
}

/** Removes temp dirs named by `re` (group 1 = pid) in the OS temp dir whose run is gone. */
export function removeLeftoverDirs(re: RegExp): void {
  for (const n of readdirSync(tmpdir())) {
    const m = re.exec(n);
    if (m && !pidAlive(Number(m[1]))) rmSync(join(tmpdir(), n), { recursive: true, force: true });
  }
}

/** veth pair between two netns with addresses (CIDR). */
export function vethPair(a: string, aIf: string, aAddr: string, b: string, bIf: string, bAddr: string): void {
  sh('ip', 'link', 'add', aIf, 'netns', a, 'type', 'veth', 'peer', 'name', bIf, 'netns', b);
  sh('ip', '-n', a, 'addr', 'add', aAddr, 'dev', aIf);
  sh('ip', '-n', b, 'addr', 'add', bAddr, 'dev', bIf);
  sh('ip', '-n', a, 'link', 'set', aIf, 'up');
  sh('ip', '-n', b, 'link', 'set', bIf, 'up');
}

export interface AppConn { peer: string; bytes: number }

/**
 * An app inside a netns: reads until the client half-closes, then answers
 * `<peer ip>|<bytes read>|<first 40 bytes>` and closes (so the test sees half-close carried both ways).
 */
export async function startApp(netns: string, port: number): Promise<{ server: net.Server; conns: AppConn[] }> {
  const conns: AppConn[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    const chunks: Buffer[] = [];
    let n = 0;
    s.on('data', (b: Buffer) => { n += b.length; if (chunks.length < 4) chunks.push(b); });
    s.on('error', () => {});
    s.on('end', () => {
      const peer = s.remoteAddress ?? '';
      conns.push({ peer, bytes: n });
      s.end(`${peer}|${n}|${Buffer.concat(chunks).subarray(0, 40).toString()}`);
    });
  });
  await native.listen(server, { netns, host: '0.0.0.0', port });
  return { server, conns };
}

/**
 * An app that speaks first and half-closes at once (`hello|<peer>` then FIN), then keeps reading;
 * it records how many bytes the client sent after that.
 */
export async function startServerFirstApp(netns: string, port: number): Promise<{ server: net.Server; received: number[] }> {
  const received: number[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    let n = 0;
    s.on('data', (b: Buffer) => (n += b.length));
    s.on('error', () => {});
    s.on('end', () => received.push(n));
    s.end(`hello|${s.remoteAddress}`);
  });
  await native.listen(server, { netns, host: '0.0.0.0', port });
  return { server, received };
}

export interface Talk { data: string; error?: string; closed: boolean }

/** Connect from inside `netns` (no mark: the in-pod rules capture it), send, half-close, read to the end. */
export async function talk(netns: string, host: string, port: number, payload: string | Buffer, timeoutMs = 10_000): Promise<Talk> {
  let sock: net.Socket;
  try {
    sock = await native.connect({ netns, host, port, timeoutMs });
  } catch (err) {
    const e = err as { code?: string; details?: { errno?: string } };
    return { data: '', error: e.details?.errno ?? e.code ?? String(err), closed: true };
  }
  return converse(sock, payload, timeoutMs);
}

export function converse(sock: net.Socket, payload: string | Buffer, timeoutMs = 10_000): Promise<Talk> {
  sock.allowHalfOpen = true;
  return new Promise((resolve) => {
    let data = '';
    let error: string | undefined;
    const timer = setTimeout(() => { error = 'timeout'; sock.destroy(); }, timeoutMs);
    sock.on('data', (b) => (data += b));
    sock.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    sock.on('close', () => { clearTimeout(timer); resolve({ data, error, closed: true }); });
    sock.on('end', () => sock.end());
    sock.write(payload);
    sock.end();
  });
}

/** tcpdump on an interface inside a netns, writing a pcap; stop() returns the raw capture. */
export async function capture(netnsName: string, iface: string, file: string): Promise<{ stop(): Promise<Buffer> }> {
  const child: ChildProcess = spawn('ip', ['netns', 'exec', netnsName, 'tcpdump', '--immediate-mode', '-i', iface, '-U', '-n', '-s', '0', '-w', file, 'tcp'], { stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let err = '';
    child.stderr!.on('data', (b) => { err += b; if (err.includes('listening on')) resolve(); });
    child.once('exit', (code) => reject(new Error(`tcpdump exited ${code}: ${err}`)));
  });
  return {
    stop: async () => {
      await new Promise((r) => setTimeout(r, 200)); // let the last packets reach the file
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGINT');
      await exited;
      return readFileSync(file);
    },
  };
}

export function until(cond: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (cond()) return resolve();
      if (Date.now() > deadline) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 20);
    };
    tick();
  });
}
