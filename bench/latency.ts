/**
 * Latency: fortio `load -qps 1000 -c 4 -t 30s -uniform -nocatchup`, 1 KB responses (fortio server's
 * /echo?size=1024), client pod on node-1 -> server pod on node-2 by pod IP, direct (plain namespace)
 * and meshed (both pods in an ambient namespace: two agents). Prints p50/p90/p99/p99.9, the latency
 * the mesh adds, the qps achieved, and the agents' CPU (millicores) and RSS during each run.
 */
import type { AgentUse } from './lib.ts';
import { ambit, execInPod, fmt, FORTIO, fortioPairManifests, mustAmbit, note, podIP, retry, table, waitReady, watchAgents } from './lib.ts';

const QPS = Number(process.env.BENCH_QPS ?? 1000);
const CONNS = Number(process.env.BENCH_CONNS ?? 4);
const DURATION = process.env.BENCH_DURATION ?? '30s';
const PERCENTILES = [50, 90, 99, 99.9];

interface FortioResult {
  ActualQPS: number;
  RetCodes: Record<string, number>;
  DurationHistogram: { Count: number; Percentiles: { Percentile: number; Value: number }[] };
}

async function fortio(from: string, url: string, duration: string): Promise<FortioResult> {
  const r = await execInPod(from, [FORTIO, 'load', '-qps', String(QPS), '-c', String(CONNS), '-t', duration,
    '-uniform', '-nocatchup', '-p', PERCENTILES.join(','), '-json', '-', '-quiet', url], 60 + 2 * parseFloat(duration) * (duration.endsWith('m') ? 60 : 1));
  let j: FortioResult;
  try { j = JSON.parse(r.stdout) as FortioResult; } catch { throw new Error(`fortio from ${from} to ${url}: ${r.stderr.slice(-2000) || r.stdout}`); }
  const ok = j.RetCodes?.['200'] ?? 0;
  if (ok === 0) throw new Error(`fortio from ${from} to ${url}: no 200 responses (${JSON.stringify(j.RetCodes)})`);
  return j;
}

const ms = (j: FortioResult, p: number) => 1000 * (j.DurationHistogram.Percentiles.find((x) => x.Percentile === p)?.Value ?? NaN);

export async function runLatency(): Promise<string> {
  const cases = [{ ns: 'lat-plain', meshed: false, label: 'direct (plain)' }, { ns: 'lat-mesh', meshed: true, label: 'meshed (2 agents)' }];
  for (const c of cases) {
    mustAmbit(['apply', '-f', '-'], fortioPairManifests(c.ns, c.meshed));
    await waitReady(c.ns, 2);
  }
  const results: { label: string; j: FortioResult; agents: Record<string, AgentUse> }[] = [];
  try {
    for (const c of cases) {
      const url = `http://${podIP(`${c.ns}/server`)}:8080/echo?size=1024`;
      const from = `${c.ns}/client`;
      await retry(`fortio ${from} -> ${url}`, () => fortio(from, url, '3s')); // warm-up, not measured
      note(`latency: ${c.label}, ${DURATION} at ${QPS} qps, ${CONNS} connections`);
      const { result, agents } = await watchAgents(() => fortio(from, url, DURATION));
      results.push({ label: c.label, j: result, agents });
    }
  } finally {
    for (const c of cases) ambit(['delete', '-f', '-'], fortioPairManifests(c.ns, false));
  }
  const [direct, mesh] = results;
  const errors = (j: FortioResult) => j.DurationHistogram.Count - (j.RetCodes['200'] ?? 0);
  const lat = table(['path', 'p50 ms', 'p90 ms', 'p99 ms', 'p99.9 ms', 'qps achieved', 'requests', 'non-200'], [
    ...results.map((r) => [r.label, ...PERCENTILES.map((p) => fmt(ms(r.j, p), 3)), fmt(r.j.ActualQPS, 1), r.j.DurationHistogram.Count, errors(r.j)]),
    ['**added by the mesh**', ...PERCENTILES.map((p) => `**${fmt(ms(mesh.j, p) - ms(direct.j, p), 3)}**`), '', '', ''],
  ]);
  const rows: (string | number)[][] = [];
  for (const r of results) {
    for (const [node, a] of Object.entries(r.agents)) {
      const millicores = (1000 * a.cpuSec) / a.wallSec;
      rows.push([r.label, node, fmt(millicores, 0), fmt(millicores / (r.j.ActualQPS / 1000) / 1000, 3), fmt(a.peakRssMiB, 1), `${fmt(a.endRssMiB, 1)} (${fmt(a.endRssAnonMiB, 1)})`]);
    }
  }
  const cpu = table(['path', 'agent', 'CPU millicores', 'vCPU per 1000 req/s', 'peak RSS MiB', 'RSS at end (anon) MiB'], rows);
  return `### Latency (fortio, ${QPS} qps, ${CONNS} connections, ${DURATION}, uniform, no catch-up, 1 KB responses)\n\n${lat}\n` +
    `### Agent CPU and memory during the latency runs\n\n${cpu}`;
}

if (import.meta.main) process.stdout.write(await runLatency());
