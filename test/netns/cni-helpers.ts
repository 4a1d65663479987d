/**
 * Helpers for the ambit-cni tests: run bin/ambit-cni the way a container runtime does (env + stdin,
 * stdout + exit code), make and remove test netns, a temp ObjectStore, a snapshot of the netns'
 * rules for before/after comparisons.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ObjectStore } from '../../src/api/object-store.ts';

export const CNI_BIN = join(import.meta.dirname, '../../bin/ambit-cni');

export interface CniRun { stdout: string; stderr: string; code: number; json: any; ms: number }

/** Async on purpose: the test's agent (PodHandoffServer) runs on this event loop. */
export function runCni(env: Record<string, string | undefined>, stdin: string): Promise<CniRun> {
  const cleanEnv: Record<string, string> = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };
  for (const [k, v] of Object.entries(env)) if (v !== undefined) cleanEnv[k] = v;
  const started = performance.now();
  return new Promise((resolve) => {
    const child = execFile(CNI_BIN, [], { env: cleanEnv, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as any).code === 'number' ? (err as any).code : -1) : 0;
      let json: any;
      try { json = stdout.trim() ? JSON.parse(stdout) : undefined; } catch { json = undefined; }
      resolve({ stdout, stderr, code, json, ms: performance.now() - started });
    });
    child.stdin!.end(stdin);
  });
}

export function shortId(): string { return randomBytes(3).toString('hex'); }

export function sh(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
}

export function netnsAdd(name: string): string {
  try { sh('ip', ['netns', 'del', name]); } catch { /* leftover of an interrupted run, or none */ }
  sh('ip', ['netns', 'add', name]);
  sh('ip', ['-n', name, 'link', 'set', 'lo', 'up']);   // as the loopback plugin does in a real pod
  return `/var/run/netns/${name}`;
}

export function netnsDel(name: string): void {
  try { sh('ip', ['netns', 'del', name]); } catch { /* already gone */ }
}

export function inNetns(name: string, cmd: string, args: string[]): string {
  return sh('ip', ['netns', 'exec', name, cmd, ...args]);
}

/**
 * Everything rule-like in a netns, normalised (no comments, counters, or empty built-in chain
 * headers: nft keeps an emptied table around, which is not a rule).
 */
export function ruleState(name: string): string {
  const save = (bin: string) => inNetns(name, bin, []).split('\n')
    .filter((l) => l.startsWith('-A ') || (l.startsWith(':') && / - \[/.test(l)))
    .join('\n');
  return [
    'v4:', save('iptables-save'), 'v6:', save('ip6tables-save'),
    'rules4:', inNetns(name, 'ip', ['-4', 'rule']), 'rules6:', inNetns(name, 'ip', ['-6', 'rule']),
    'routes4:', inNetns(name, 'ip', ['-4', 'route', 'show', 'table', 'all']),
    'routes6:', inNetns(name, 'ip', ['-6', 'route', 'show', 'table', 'all']),
  ].join('\n');
}

export function hint(name: string): string {
  return `(inspect: ip netns exec ${name} iptables-save; ip netns exec ${name} ip rule)`;
}

export interface TempStore { root: string; store: ObjectStore; cleanup(): void }
export function tempStore(): TempStore {
  const root = mkdtempSync(join(tmpdir(), 'ambt-cni-'));
  return { root, store: new ObjectStore(root), cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

export function namespaceObj(name: string, labels: Record<string, string> = {}) {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } };
}
export function podObj(ns: string, name: string, uid: string, opts: { labels?: Record<string, string>; sa?: string } = {}) {
  return {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name, namespace: ns, uid, labels: opts.labels ?? {} },
    spec: { ...(opts.sa ? { serviceAccountName: opts.sa } : {}), containers: [{ name: 'app' }] },
  };
}

export function prevResult(ip: string, version = '1.0.0', ip6?: string) {
  return {
    cniVersion: version,
    interfaces: [{ name: 'eth0', mac: '0a:58:0a:f4:00:05', sandbox: '/var/run/netns/x' }],
    ips: [
      { address: `${ip}/24`, gateway: ip.replace(/\.\d+$/, '.1'), interface: 0 },
      ...(ip6 ? [{ address: `${ip6}/64`, interface: 0 }] : []),
    ],
    routes: [{ dst: '0.0.0.0/0' }],
    dns: {},
  };
}
