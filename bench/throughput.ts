/**
 * Throughput: single-stream iperf3 (-t BENCH_IPERF_SECONDS, BENCH_REPS repetitions) from a client pod
 * to a server pod, direct (plain namespace) and through the node agents (meshed namespace), across
 * nodes (node-1 -> node-2) and, for information, on one node (node-2 -> node-2). Prints Gbit/s
 * (median and range) and the agents' CPU seconds per GB moved. Needs a running instance (run.sh).
 */
import { ambit, execInPod, fmt, median, mustAmbit, note, podIP, retry, table, waitReady, watchAgents, namespaceManifest } from './lib.ts';

const REPS = Number(process.env.BENCH_REPS ?? 3);
const SECONDS = Number(process.env.BENCH_IPERF_SECONDS ?? 10);

function manifests(ns: string, meshed: boolean): string {
  return `${namespaceManifest(ns, meshed)}
---
apiVersion: v1
kind: Pod
metadata: { name: server, namespace: ${ns} }
spec: { nodeName: node-2, containers: [{ name: iperf, image: bench/iperf3, command: ["iperf3", "-s"], ports: [{ containerPort: 5201 }] }] }
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: ${ns} }
spec: { nodeName: node-1, containers: [{ name: sleep, image: ambit/sleep }] }
---
apiVersion: v1
kind: Pod
metadata: { name: neighbour, namespace: ${ns} }
spec: { nodeName: node-2, containers: [{ name: sleep, image: ambit/sleep }] }
`;
}

interface IperfEnd { end?: { sum_sent?: { bytes: number; bits_per_second: number }; sum_received?: { bytes: number; bits_per_second: number } }; error?: string }

async function iperf(from: string, server: string, seconds: number): Promise<{ gbps: number; bytes: number }> {
  const r = await execInPod(from, ['iperf3', '-c', server, '-t', String(seconds), '-J'], seconds + 20);
  if (r.code === 124 || r.code === 137) throw new Error(`iperf3 from ${from} to ${server} hung (killed after ${seconds + 20} s)`);
  let j: IperfEnd;
  try { j = JSON.parse(r.stdout) as IperfEnd; } catch { throw new Error(`iperf3 from ${from} to ${server}: ${r.stderr || r.stdout}`); }
  if (j.error || !j.end?.sum_received) throw new Error(`iperf3 from ${from} to ${server}: ${j.error ?? 'no result'}`);
  return { gbps: j.end.sum_received.bits_per_second / 1e9, bytes: j.end.sum_received.bytes };
}

interface Scenario { label: string; ns: string; from: string; meshed: boolean; crossNode: boolean }

export async function runThroughput(): Promise<string> {
  const scenarios: Scenario[] = [
    { label: 'node-1 → node-2, direct (plain namespace)', ns: 'tp-plain', from: 'client', meshed: false, crossNode: true },
    { label: 'node-1 → node-2, meshed (two agents, HBONE)', ns: 'tp-mesh', from: 'client', meshed: true, crossNode: true },
    { label: 'node-2 → node-2, direct (same node)', ns: 'tp-plain', from: 'neighbour', meshed: false, crossNode: false },
    { label: 'node-2 → node-2, meshed (same node, one agent)', ns: 'tp-mesh', from: 'neighbour', meshed: true, crossNode: false },
  ];
  for (const ns of ['tp-plain', 'tp-mesh']) {
    mustAmbit(['apply', '-f', '-'], manifests(ns, ns === 'tp-mesh'));
    await waitReady(ns, 3);
  }
  const rows: (string | number)[][] = [];
  const failures: string[] = [];
  try {
    for (const s of scenarios) {
      const server = podIP(`${s.ns}/server`);
      const from = `${s.ns}/${s.from}`;
      // Warm-up (not measured): the mesh config has reached the agents, the HBONE pool is open.
      await retry(`iperf3 ${from} -> ${server}`, () => iperf(from, server, 1));
      const gbps: number[] = [];
      let bytes = 0;
      const cpu: Record<string, number> = {};
      for (let i = 0; i < REPS; i++) {
        note(`throughput: ${s.label}, run ${i + 1}/${REPS}`);
        try {
          const { result, agents } = await watchAgents(() => iperf(from, server, SECONDS));
          gbps.push(result.gbps);
          bytes += result.bytes;
          for (const [n, a] of Object.entries(agents)) cpu[n] = (cpu[n] ?? 0) + a.cpuSec;
        } catch (err) {
          failures.push(`${s.label}: ${(err as Error).message}`);
        }
      }
      if (gbps.length === 0) { rows.push([s.label, 'failed', '', '', '', '', `0/${REPS}`]); continue; }
      const gb = bytes / 1e9;
      const sum = Object.values(cpu).reduce((a, b) => a + b, 0);
      rows.push([
        s.label, fmt(median(gbps)), `${fmt(Math.min(...gbps))}–${fmt(Math.max(...gbps))}`,
        fmt(sum / gb, 3), fmt((cpu['node-1'] ?? 0) / gb, 3), fmt((cpu['node-2'] ?? 0) / gb, 3), `${gbps.length}/${REPS}`,
      ]);
    }
  } finally {
    for (const ns of ['tp-plain', 'tp-mesh']) ambit(['delete', '-f', '-'], manifests(ns, false));
  }
  return `### Throughput (iperf3, single stream, ${SECONDS} s × ${REPS})\n\n` + table(
    ['path', 'Gbit/s (median)', 'range', 'agents CPU s/GB (sum)', 'node-1 agent s/GB', 'node-2 agent s/GB', 'runs ok'], rows) +
    (failures.length ? `\nFailed runs: ${failures.join('; ')}\n` : '');
}

if (import.meta.main) process.stdout.write(await runThroughput());
