/**
 * Policy cost on new connections: fortio without keep-alive (one TCP connection per request, as
 * fast as it goes: `-qps 0 -c BENCH_RATE_CONNS -keepalive=false`), client pod on node-1 -> server
 * pod on node-2 by pod IP, in a plain namespace (baseline) and meshed with 0, 100 and 1000
 * AuthorizationPolicies in the server's namespace. Every policy applies to the server (no selector),
 * so the destination agent evaluates all of them on each connection: half DENY from other
 * namespaces (none match, all are checked), half ALLOW for other principals, and one ALLOW for the
 * client's namespace (sorted last, so every ALLOW is tried before it matches).
 */
import { spawnSync } from 'node:child_process';
import type { AgentUse } from './lib.ts';
import { AMBIT, INSTANCE, fortioPairManifests, ambit, execInPod, fmt, FORTIO, mustAmbit, note, podIP, retry, sleep, table, waitReady, watchAgents } from './lib.ts';

const CONNS = Number(process.env.BENCH_RATE_CONNS ?? 4);
const DURATION = process.env.BENCH_RATE_DURATION ?? '10s';
const COUNTS = (process.env.BENCH_POLICY_COUNTS ?? '0,100,1000').split(',').map(Number);

/** Policies `from`..`to-1` (one of them, `zz-allow-client`, lets the client in). */
function policies(ns: string, from: number, to: number): string {
  const docs: string[] = [];
  for (let i = from; i < to; i++) {
    docs.push(i === 0
      ? `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: zz-allow-client, namespace: ${ns} }
spec: { action: ALLOW, rules: [{ from: [{ source: { namespaces: ["${ns}"] } }] }] }`
      : i % 2 === 0
        ? `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-${i}, namespace: ${ns} }
spec: { action: DENY, rules: [{ from: [{ source: { namespaces: ["other-${i}"] } }], to: [{ operation: { ports: ["8080"] } }] }] }`
        : `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-${i}, namespace: ${ns} }
spec: { action: ALLOW, rules: [{ from: [{ source: { principals: ["cluster.local/ns/other-${i}/sa/default"] } }] }] }`);
  }
  return docs.join('\n---\n') + '\n';
}

interface FortioResult {
  ActualQPS: number;
  RetCodes: Record<string, number>;
  DurationHistogram: { Count: number; Percentiles: { Percentile: number; Value: number }[] };
}

async function fortio(from: string, url: string, duration: string): Promise<FortioResult> {
  const r = await execInPod(from, [FORTIO, 'load', '-qps', '0', '-c', String(CONNS), '-t', duration, '-keepalive=false',
    '-p', '50,99', '-json', '-', '-quiet', url], 120);
  let j: FortioResult;
  try { j = JSON.parse(r.stdout) as FortioResult; } catch { throw new Error(`fortio from ${from} to ${url}: ${r.stderr.slice(-2000) || r.stdout}`); }
  if ((j.RetCodes?.['200'] ?? 0) === 0) throw new Error(`fortio from ${from} to ${url}: no 200 responses (${JSON.stringify(j.RetCodes)})`);
  return j;
}

const ms = (j: FortioResult, p: number) => 1000 * (j.DurationHistogram.Percentiles.find((x) => x.Percentile === p)?.Value ?? NaN);

/** Waits until node-2's agent holds `n` authorization policies of `ns` (its admin API, via the CLI). */
async function waitPolicies(ns: string, n: number): Promise<void> {
  await retry(`${n} policies of ${ns} on node-2's agent`, async () => {
    const out = spawnCli(['ztunnel-config', 'policies', '--node', 'node-2', '-o', 'json']);
    const count = countPolicies(out, ns);
    return count === n ? true : (await sleep(200), undefined);
  }, 120_000);
}

/** `ambit ARGS` (not `ambit local`) against this instance; stdout, or '' when it failed. */
function spawnCli(args: string[]): string {
  const r = spawnSync(AMBIT, args, { env: { ...process.env, AMBIT_LOCAL_INSTANCE: INSTANCE }, encoding: 'utf8', maxBuffer: 256 << 20 });
  return r.status === 0 ? r.stdout : '';
}
function countPolicies(json: string, ns: string): number {
  try {
    const j = JSON.parse(json) as unknown;
    const list = findPolicies(j);
    return list.filter((p) => p.namespace === ns).length;
  } catch { return -1; }
}
function findPolicies(j: unknown): { namespace: string }[] {
  if (Array.isArray(j)) return j.flatMap(findPolicies);
  if (j && typeof j === 'object') {
    const o = j as Record<string, unknown>;
    if (typeof o.namespace === 'string' && typeof o.action === 'string') return [o as { namespace: string }];
    return Object.values(o).flatMap(findPolicies);
  }
  return [];
}

export async function runPolicyRate(): Promise<string> {
  const plain = 'rate-plain';
  const mesh = 'rate-mesh';
  for (const [ns, meshed] of [[plain, false], [mesh, true]] as const) {
    mustAmbit(['apply', '-f', '-'], fortioPairManifests(ns, meshed));
    await waitReady(ns, 2);
  }
  const rows: (string | number)[][] = [];
  let base = NaN;
  let applied = 0;
  try {
    const cases: { label: string; ns: string; policies?: number }[] = [
      { label: 'direct (plain namespace)', ns: plain },
      ...COUNTS.map((n) => ({ label: `meshed, ${n} policies`, ns: mesh, policies: n })),
    ];
    for (const c of cases) {
      if (c.policies !== undefined && c.policies > applied) {
        mustAmbit(['apply', '-f', '-'], policies(mesh, applied, c.policies));
        applied = c.policies;
      }
      if (c.policies !== undefined) await waitPolicies(mesh, applied);
      const url = `http://${podIP(`${c.ns}/server`)}:8080/echo?size=64`;
      const from = `${c.ns}/client`;
      await retry(`fortio ${from} -> ${url}`, () => fortio(from, url, '2s')); // warm-up
      note(`policy rate: ${c.label}, ${DURATION}, ${CONNS} connections, no keep-alive`);
      const { result, agents } = await watchAgents(() => fortio(from, url, DURATION));
      const a2: AgentUse | undefined = agents['node-2'];
      if (c.policies === 0) base = result.ActualQPS;
      rows.push([c.label, fmt(result.ActualQPS, 0), c.policies === undefined || !base ? '' : `${fmt((100 * result.ActualQPS) / base, 0)}%`,
        fmt(ms(result, 50), 3), fmt(ms(result, 99), 3), result.DurationHistogram.Count - (result.RetCodes['200'] ?? 0),
        a2 ? fmt((1000 * a2.cpuSec) / a2.wallSec, 0) : '', a2 ? fmt(a2.endRssMiB, 1) : '']);
    }
  } finally {
    ambit(['delete', '-f', '-'], fortioPairManifests(plain, false));
    ambit(['delete', '-f', '-'], policies(mesh, 0, applied) + '---\n' + fortioPairManifests(mesh, false));
  }
  return `### New connections with policies (fortio, ${CONNS} connections, no keep-alive, ${DURATION}, as fast as possible)\n\n` + table(
    ['path', 'connections/s', 'vs 0 policies', 'p50 ms', 'p99 ms', 'errors', 'node-2 agent millicores', 'node-2 agent RSS MiB'], rows);
}

if (import.meta.main) process.stdout.write(await runPolicyRate());
