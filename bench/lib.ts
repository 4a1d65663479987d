/**
 * Shared by the benchmark scripts: drive one `ambit local` instance (AMBIT_LOCAL_INSTANCE, default
 * "bench", started by run.sh), find the node agents, sample their CPU time and memory from /proc,
 * and print markdown tables. Benchmarks print figures; they assert nothing about timing.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '..');
export const AMBIT = join(ROOT, 'bin', 'ambit');
export const FORTIO = join(ROOT, '.cache', 'bin', 'fortio');
export const INSTANCE = process.env.AMBIT_LOCAL_INSTANCE || 'bench';
export const STATE = `/run/ambit/${INSTANCE}`;
/** USER_HZ: /proc/PID/stat counts CPU time in these ticks (100 on every Linux we run on). */
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Progress goes to stderr so stdout stays the markdown tables. */
/** A Namespace manifest, enrolled in the mesh (ambient) or plain (the baseline). */
export function namespaceManifest(ns: string, meshed: boolean): string {
  const label = meshed ? ', labels: { istio.io/dataplane-mode: ambient }' : '';
  return `apiVersion: v1\nkind: Namespace\nmetadata: { name: ${ns}${label} }`;
}

export function note(msg: string): void {
  process.stderr.write(`# ${new Date().toISOString().slice(11, 19)} ${msg}\n`);
}

export interface Run { code: number; stdout: string; stderr: string }

export function ambit(args: string[], input?: string): Run {
  const r = spawnSync(AMBIT, ['local', ...args], {
    env: { ...process.env, AMBIT_LOCAL_INSTANCE: INSTANCE }, input, encoding: 'utf8', timeout: 600_000, maxBuffer: 64 << 20,
  });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

export function mustAmbit(args: string[], input?: string): string {
  const r = ambit(args, input);
  if (r.code !== 0) throw new Error(`ambit local ${args.join(' ')} failed (${r.code}): ${r.stderr || r.stdout}\n(logs: ${STATE}/logs)`);
  return r.stdout;
}

/**
 * A command in a pod's netns, asynchronously (so this process can sample the agents meanwhile).
 * `timeout` (coreutils, inside the pod) ends a command that hangs; exit code 124 or 137 then.
 */
export function execInPod(pod: string, cmd: string[], timeoutSec = 120): Promise<Run> {
  return new Promise((res) => {
    const child = spawn(AMBIT, ['local', 'exec', pod, '--', 'timeout', '-k', '5', String(timeoutSec), ...cmd], {
      env: { ...process.env, AMBIT_LOCAL_INSTANCE: INSTANCE }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('close', (code) => res({ code: code ?? -1, stdout, stderr }));
  });
}

export interface PodInfo { name: string; namespace: string; ip: string; node: string; ready: boolean; netns: string }

export function pods(ns?: string): PodInfo[] {
  const out = mustAmbit(['get', 'pods', ...(ns ? ['-n', ns] : ['-A']), '-o', 'json']);
  const items = (JSON.parse(out) as { items: { metadata: { name: string; namespace: string; annotations?: Record<string, string> }; spec: { nodeName?: string }; status?: { podIP?: string; conditions?: { type: string; status: string }[] } }[] }).items;
  return items.map((p) => ({
    name: p.metadata.name,
    namespace: p.metadata.namespace,
    ip: p.status?.podIP ?? '',
    node: p.spec.nodeName ?? '',
    ready: p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false,
    netns: p.metadata.annotations?.['local.ambit.dev/netns'] ?? '',
  }));
}

export function podIP(key: string): string {
  const [ns, name] = key.split('/');
  const p = pods(ns).find((x) => x.name === name);
  if (!p?.ip) throw new Error(`pod ${key} has no IP yet (ambit local get pods -n ${ns} -o wide)`);
  return p.ip;
}

/** Until `count` pods of the namespace are Ready (apply returns when they are created). */
export async function waitReady(ns: string, count: number, timeoutMs = 300_000): Promise<PodInfo[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const list = pods(ns);
    if (list.filter((p) => p.ready).length >= count) return list;
    if (Date.now() > deadline) throw new Error(`only ${list.filter((p) => p.ready).length}/${count} pods Ready in ${ns} after ${timeoutMs} ms`);
    await sleep(500);
  }
}

/** The node agents' pids, by node name (the processes `... agent --node node-N ... <state dir>/...`). */
export function agentPids(): Record<string, number> {
  const out: Record<string, number> = {};
  const r = spawnSync('pgrep', ['-af', `agent --node node-[0-9]+ .*${STATE}/`], { encoding: 'utf8' });
  for (const line of r.stdout.split('\n').filter(Boolean)) {
    const m = /^(\d+) .* agent --node (node-\d+) /.exec(line);
    if (m) out[m[2]] = Number(m[1]);
  }
  if (Object.keys(out).length === 0) throw new Error(`no agent processes for ${STATE}; is the instance up (AMBIT_LOCAL_INSTANCE=${INSTANCE} bin/ambit local status)?`);
  return out;
}

/** rssAnonMiB: the process's own memory (RssFile, mostly the node binary's code, is shared). */
export interface ProcSample { cpuSec: number; rssMiB: number; rssAnonMiB: number; at: number }

/** CPU time (utime+stime, all threads) and resident memory of one process. */
export function sample(pid: number): ProcSample {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // f[0] is field 3 (state)
  const cpuSec = (Number(f[11]) + Number(f[12])) / CLK_TCK;    // fields 14, 15
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
  return { cpuSec, rssMiB: kib('VmRSS') / 1024, rssAnonMiB: kib('RssAnon') / 1024, at: performance.now() };
}

export function sampleAgents(pids: Record<string, number>): Record<string, ProcSample> {
  return Object.fromEntries(Object.entries(pids).map(([n, p]) => [n, sample(p)]));
}

export interface AgentUse { cpuSec: number; wallSec: number; peakRssMiB: number; endRssMiB: number; endRssAnonMiB: number }

/** Samples the agents every `everyMs` while `work` runs: CPU used, wall time, peak RSS, per agent. */
export async function watchAgents<T>(work: () => Promise<T>, everyMs = 500): Promise<{ result: T; agents: Record<string, AgentUse> }> {
  const pids = agentPids();
  const before = sampleAgents(pids);
  const peak: Record<string, number> = Object.fromEntries(Object.entries(before).map(([n, s]) => [n, s.rssMiB]));
  const timer = setInterval(() => {
    for (const [n, p] of Object.entries(pids)) { try { peak[n] = Math.max(peak[n], sample(p).rssMiB); } catch { /* restarted: reported below */ } }
  }, everyMs);
  let result: T;
  try { result = await work(); } finally { clearInterval(timer); }
  const after = sampleAgents(pids);
  const agents = Object.fromEntries(Object.keys(pids).map((n) => [n, {
    cpuSec: after[n].cpuSec - before[n].cpuSec,
    wallSec: (after[n].at - before[n].at) / 1000,
    peakRssMiB: Math.max(peak[n], after[n].rssMiB),
    endRssMiB: after[n].rssMiB,
    endRssAnonMiB: after[n].rssAnonMiB,
  }]));
  return { result, agents };
}

/** Pods an agent has taken (its records directory). */
export function agentPodCount(node: string): number {
  try { return readdirSync(join(STATE, 'nodes', node, 'pods')).filter((f) => f.endsWith('.json')).length; } catch { return 0; }
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Nearest-rank percentile. */
export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

export function fmt(x: number | undefined, digits = 2): string {
  return x === undefined || Number.isNaN(x) ? '–' : x.toFixed(digits);
}

export function table(headers: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.join(' | ')} |`;
  return [line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n') + '\n';
}

/** Retries `fn` until it succeeds: the mesh config reaches the agents a moment after apply. */
export async function retry<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: still failing after ${timeoutMs} ms (logs: ${STATE}/logs)`);
    await sleep(500);
  }
}

/** A fortio server pod on node-2 (:8080) and a sleep client pod on node-1, in namespace `ns`. */
export function fortioPairManifests(ns: string, meshed: boolean): string {
  return `${namespaceManifest(ns, meshed)}
---
apiVersion: v1
kind: Pod
metadata: { name: server, namespace: ${ns} }
spec:
  nodeName: node-2
  containers:
    - name: fortio
      image: fortio/fortio
      command: ["${FORTIO}", "server", "-http-port", "8080", "-grpc-port", "disabled", "-redirect-port", "disabled", "-quiet"]
      ports: [{ containerPort: 8080 }]
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: ${ns} }
spec: { nodeName: node-1, containers: [{ name: sleep, image: ambit/sleep }] }
`;
}
