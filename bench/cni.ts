/**
 * CNI ADD time: bin/ambit-cni executed as a container runtime does (env + stdin, helpers shared with
 * test/netns/cni*.test.ts), each time in a fresh throwaway netns, handing enrolled pods to the REAL
 * node-1 agent of the running instance (its socket), so the time includes the agent opening the
 * pod's listeners. Pod metadata comes from a temporary object store (the controller never sees these
 * pods). The enrolled pods share the identity of a real pod already on node-1 (its certificate is
 * cached: the usual case when a Deployment scales). Prints p50/p90 of the exec wall time (what a
 * runtime waits for, Node start-up included) and of the in-plugin duration from the plugin's log.
 * Also: apply -> Ready of a single pod, plain vs meshed with a new service account (certificate
 * issued on the way), the whole sandbox path of the local runtime.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { namespaceObj, netnsAdd, netnsDel, podObj, prevResult, runCni, shortId, tempStore } from '../test/netns/cni-helpers.ts';
import { ambit, fmt, mustAmbit, note, percentile, pods, sleep, STATE, table, waitReady } from './lib.ts';

const RUNS = Number(process.env.BENCH_CNI_RUNS ?? 30);
const NODE = 'node-1';
const MESH_NS = 'cni-mesh';
const PLAIN_NS = 'cni-plain';

/** A real meshed pod on node-1, so the agent holds the cni-mesh/default certificate. */
const ANCHOR = `
apiVersion: v1
kind: Namespace
metadata: { name: ${MESH_NS}, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Pod
metadata: { name: anchor, namespace: ${MESH_NS} }
spec: { nodeName: ${NODE}, containers: [{ name: sleep, image: ambit/sleep }] }
`;

const singlePod = (ns: string, name: string, meshed: boolean, sa?: string) => `
apiVersion: v1
kind: Namespace
metadata: { name: ${ns}${meshed ? ', labels: { istio.io/dataplane-mode: ambient }' : ''} }
---
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: ${ns} }
spec: { nodeName: ${NODE}, ${sa ? `serviceAccountName: ${sa}, ` : ''}containers: [{ name: sleep, image: ambit/sleep }] }
`;

interface Timing { wall: number[]; inPlugin: number[]; failures: string[] }

async function cniAddDel(kind: 'enrolled' | 'plain'): Promise<Timing> {
  const store = tempStore();
  const logDir = mkdtempSync(join(tmpdir(), 'ambt-cnibench-'));
  const logFile = join(logDir, 'cni.log');
  const ns = kind === 'enrolled' ? MESH_NS : PLAIN_NS;
  const t: Timing = { wall: [], inPlugin: [], failures: [] };
  try {
    await store.store.put(namespaceObj(MESH_NS, { 'istio.io/dataplane-mode': 'ambient' }) as never);
    await store.store.put(namespaceObj(PLAIN_NS) as never);
    for (let i = 0; i < RUNS; i++) {
      const id = shortId();
      const name = `bench-${id}`;
      const uid = `uid-bench-${id}`;
      await store.store.put(podObj(ns, name, uid) as never);
      const netnsName = `ambt-bc${id}`;
      const netns = netnsAdd(netnsName);
      const ip = `10.99.${i >> 8}.${(i & 255) + 1}`;
      const config = JSON.stringify({
        cniVersion: '1.0.0', name: 'ambit-pods', type: 'ambit-cni',
        agentSocket: join(STATE, 'nodes', NODE, 'ztunnel.sock'), objectStore: store.root, logFile,
        prevResult: prevResult(ip),
      });
      const env = (command: string) => ({
        CNI_COMMAND: command, CNI_CONTAINERID: `ctr-${id}`, CNI_NETNS: netns, CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni',
        CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${ns};K8S_POD_NAME=${name};K8S_POD_UID=${uid}`,
      });
      try {
        const add = await runCni(env('ADD'), config);
        if (add.code !== 0) t.failures.push(`ADD ${name}: ${add.stdout}${add.stderr}`);
        else t.wall.push(add.ms);
        const del = await runCni(env('DEL'), config);
        if (del.code !== 0) t.failures.push(`DEL ${name}: ${del.stdout}${del.stderr}`);
      } finally {
        netnsDel(netnsName);
      }
    }
    // One line per invocation: "... command=ADD ... duration_ms=12.3".
    for (const line of readFileSync(logFile, 'utf8').split('\n')) {
      const m = /command=ADD .* result=ok.* duration_ms=([\d.]+)/.exec(line);
      if (m) t.inPlugin.push(Number(m[1]));
    }
  } finally {
    store.cleanup();
    rmSync(logDir, { recursive: true, force: true });
  }
  return t;
}

/** VERSION does no work: the floor every invocation pays (Node start-up, module loading). */
async function versionFloor(): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < RUNS; i++) out.push((await runCni({ CNI_COMMAND: 'VERSION' }, JSON.stringify({ cniVersion: '1.0.0' }))).ms);
  return out;
}

/** apply -> Ready for one pod at a time (sandbox: loopback + bridge + host-local [+ ambit-cni], then the process). */
async function podStart(meshed: boolean, newSa: boolean, runs: number): Promise<number[]> {
  const out: number[] = [];
  const ns = meshed ? 'cni-start-mesh' : 'cni-start-plain';
  for (let i = 0; i < runs; i++) {
    const yaml = singlePod(ns, `p${i}`, meshed, newSa ? `sa-${shortId()}` : undefined);
    const started = performance.now();
    mustAmbit(['apply', '-f', '-'], yaml);
    const deadline = Date.now() + 60_000;
    while (!pods(ns).find((p) => p.name === `p${i}`)?.ready && Date.now() < deadline) await sleep(20);
    out.push(performance.now() - started);
    ambit(['delete', '-f', '-'], yaml);
  }
  return out;
}

export async function runCniBench(): Promise<string> {
  mustAmbit(['apply', '-f', '-'], ANCHOR);
  await waitReady(MESH_NS, 1);
  await sleep(1000); // the anchor's certificate is issued
  const row = (label: string, xs: number[], extra = '') => [label, xs.length, fmt(percentile(xs, 50), 1), fmt(percentile(xs, 90), 1), fmt(Math.max(...xs), 1), extra];
  let rows: (string | number)[][];
  const failures: string[] = [];
  let starts: (string | number)[][];
  try {
    note(`cni: ${RUNS} × VERSION, ADD+DEL plain, ADD+DEL enrolled`);
    const floor = await versionFloor();
    const plain = await cniAddDel('plain');
    const enrolled = await cniAddDel('enrolled');
    failures.push(...plain.failures, ...enrolled.failures);
    rows = [
      row('VERSION (start-up floor)', floor),
      row('ADD, plain pod (pass-through): exec wall', plain.wall),
      row('ADD, plain pod: inside the plugin', plain.inPlugin),
      row('ADD, enrolled pod: exec wall', enrolled.wall, 'rules + hand-off to the node-1 agent'),
      row('ADD, enrolled pod: inside the plugin', enrolled.inPlugin),
    ];
    const n = Math.max(5, Math.round(RUNS / 3));
    note(`cni: ${n} × single pod apply -> Ready, plain / meshed (new service account)`);
    const startPlain = await podStart(false, false, n);
    const startMesh = await podStart(true, true, n);
    starts = [row('plain namespace', startPlain, 'loopback + bridge + host-local, process'), row('meshed, new service account each', startMesh, '+ ambit-cni, agent listeners, certificate')];
  } finally {
    ambit(['delete', '-f', '-'], ANCHOR);
    for (const ns of ['cni-start-plain', 'cni-start-mesh']) ambit(['delete', '-f', '-'], `apiVersion: v1\nkind: Namespace\nmetadata: { name: ${ns} }\n`);
  }
  let out = `### CNI ADD (bin/ambit-cni, ${RUNS} runs each, ms)\n\n` +
    table(['invocation', 'n', 'p50 ms', 'p90 ms', 'max ms', 'note'], rows) +
    `\n### Pod start, apply → Ready (one pod at a time on ${NODE}, ms)\n\n` +
    table(['pod', 'n', 'p50 ms', 'p90 ms', 'max ms', 'what'], starts);
  if (failures.length) out += `\nFailures (${failures.length}): ${failures.slice(0, 3).join(' | ')}\n`;
  return out;
}

if (import.meta.main) process.stdout.write(await runCniBench());
