/**
 * Scale: a Deployment of BENCH_PODS (default 100) `ambit/sleep` pods spread over the nodes, first in
 * a plain namespace (the baseline: the agents should not notice), then in a meshed one. For each
 * agent: RSS and open fds before and after, CPU spent taking the pods, and the per-pod cost; plus
 * the time until all pods are Ready, and what one sleep pod itself costs.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import type { ProcSample } from './lib.ts';
import { agentPids, agentPodCount, ambit, fmt, mustAmbit, note, pods, sample, sleep, table, waitReady, namespaceManifest } from './lib.ts';

const PODS = Number(process.env.BENCH_PODS ?? 100);

function manifests(ns: string, meshed: boolean): string {
  return `${namespaceManifest(ns, meshed)}
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: sleep, namespace: ${ns} }
spec:
  replicas: ${PODS}
  selector: { matchLabels: { app: sleep } }
  template:
    metadata: { labels: { app: sleep } }
    spec: { containers: [{ name: sleep, image: ambit/sleep }] }
`;
}

const fdCount = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

/** Agents' RSS after a quiet moment (the heap settles after a burst of work). */
async function settled(pids: Record<string, number>) {
  await sleep(3000);
  return Object.fromEntries(Object.entries(pids).map(([n, p]) => [n, { ...sample(p), fds: fdCount(p) }]));
}

/** RSS of a pod's own process(es): what the pod costs outside the agent. */
function podProcessRssMiB(netns: string): number {
  const r = spawnSync('ip', ['netns', 'pids', netns], { encoding: 'utf8' });
  let kib = 0;
  for (const pid of r.stdout.split('\n').filter(Boolean)) {
    kib += Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  }
  return kib / 1024;
}

/** An idle Node 24 process: the floor under any agent's RSS. */
async function bareNode(): Promise<ProcSample> {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  try {
    await sleep(1000);
    return sample(child.pid!);
  } finally {
    child.kill();
  }
}

async function waitGone(ns: string): Promise<void> {
  for (let i = 0; i < 600 && pods(ns).length > 0; i++) await sleep(500);
}

interface Phase { label: string; readySec: number; perNode: Record<string, number>; before: Awaited<ReturnType<typeof settled>>; after: Awaited<ReturnType<typeof settled>>; afterDelete: Awaited<ReturnType<typeof settled>>; podRss: number }

async function phase(ns: string, meshed: boolean): Promise<Phase> {
  const pids = agentPids();
  const before = await settled(pids);
  note(`scale: ${PODS} pods in ${meshed ? 'a meshed' : 'a plain'} namespace`);
  const started = performance.now();
  mustAmbit(['apply', '-f', '-'], manifests(ns, meshed));
  const list = await waitReady(ns, PODS, 600_000);
  const readySec = (performance.now() - started) / 1000;
  if (meshed) {
    // Ready is the runtime's view; the agents hold the pods once CNI ADD returned, which is before.
    const held = Object.keys(pids).reduce((s, n) => s + agentPodCount(n), 0);
    if (held < PODS) note(`scale: agents hold ${held}/${PODS} pods`);
  }
  const perNode: Record<string, number> = {};
  for (const p of list) perNode[p.node] = (perNode[p.node] ?? 0) + 1;
  const after = await settled(pids);
  const podRss = podProcessRssMiB(list[0].netns);
  ambit(['delete', '-f', '-'], manifests(ns, false));
  await waitGone(ns);
  const afterDelete = await settled(pids);
  return { label: meshed ? 'meshed' : 'plain (baseline)', readySec, perNode, before, after, afterDelete, podRss };
}

export async function runScale(): Promise<string> {
  const phases = [await phase('scale-plain', false), await phase('scale-mesh', true)];
  const rows: (string | number)[][] = [];
  for (const ph of phases) {
    for (const node of Object.keys(ph.before).sort()) {
      const b = ph.before[node];
      const a = ph.after[node];
      const n = ph.perNode[node] ?? 0;
      rows.push([ph.label, node, n, fmt(b.rssMiB, 1), `${fmt(a.rssMiB, 1)} (${fmt(a.rssAnonMiB, 1)})`, fmt(a.rssMiB - b.rssMiB, 1),
        n ? fmt((1024 * (a.rssMiB - b.rssMiB)) / n, 0) : '–', `${b.fds} → ${a.fds}`, fmt(a.cpuSec - b.cpuSec, 2), fmt(ph.afterDelete[node].rssMiB, 1)]);
    }
  }
  const main = table(['namespace', 'agent', 'pods on node', 'RSS before MiB', 'RSS after (anon) MiB', 'Δ MiB', 'KiB per pod', 'open fds', 'agent CPU s', 'RSS after delete MiB'], rows);
  const timing = table(['namespace', `time until ${PODS} pods Ready (s)`, 'per pod (ms)', 'RSS of one pod\'s process MiB'],
    phases.map((p) => [p.label, fmt(p.readySec, 1), fmt((1000 * p.readySec) / PODS, 0), fmt(p.podRss, 2)]));
  const floor = await bareNode();
  return `### Scale (${PODS} \`ambit/sleep\` pods, one Deployment)\n\n${main}\n${timing}\n` +
    `For scale: an idle \`node -e 'setInterval(() => {}, 1000)'\` (Node ${process.version}) has an RSS of ${fmt(floor.rssMiB, 1)} MiB (anon ${fmt(floor.rssAnonMiB, 1)}; the rest is the node binary's code, shared).\n`;
}

if (import.meta.main) process.stdout.write(await runScale());
