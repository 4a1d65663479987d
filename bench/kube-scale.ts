/**
 * Kubernetes scale: a real control plane (etcd, kube-apiserver, kube-controller-manager) holding
 * BENCH_KUBE_SERVICES Services (default 1000) and BENCH_KUBE_PODS Pods (default 2000, Istio's
 * load-test size) over BENCH_KUBE_NODES node names (default 4). The pods are API objects only: their
 * status (Running, podIP, Ready) is patched in as a kubelet would; nothing runs them. One real
 * `ambit controller --kubeconfig` watches the API server; one real `ambit agent` per node runs in its
 * own private netns (its admin/readiness/metrics ports are fixed, so they cannot share one). Each
 * agent netns has a veth to the host; the controller listens on the host end of node-1's veth, which
 * every netns reaches through its default route. Needs no local mesh.
 *
 * Measures: initial sync of all agents; full resync after `kill -9` of the controller and a
 * restart; policy propagation (`kubectl apply` of an AuthorizationPolicy until every agent has
 * applied and ACKed it: the agent's debug line 'config applied' follows right after it writes the
 * ACK) BENCH_KUBE_POLICY_REPS times (default 20); controller RSS/CPU under load and at rest; agent
 * RSS per 1000 workloads.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateAuthority } from '../src/controller/ca/ca.ts';
import { AUTHORIZATION_TYPE } from '../src/controller/push/wire.ts';
import { KubeClient, loadKubeConfig, MERGE_PATCH, statusOf } from '../src/controller/sources/kube/client.ts';
import { freePort, startKubeControlPlane, stopKubeControlPlane, type KubeControlPlane } from '../src/local/kube/control-plane.ts';
import { fmt, note, percentile, median, ROOT, sample, sleep, table, type ProcSample } from './lib.ts';

const SERVICES = Number(process.env.BENCH_KUBE_SERVICES ?? 1000);
const PODS = Number(process.env.BENCH_KUBE_PODS ?? 2000);
const NODES = Number(process.env.BENCH_KUBE_NODES ?? 4);
const REPS = Number(process.env.BENCH_KUBE_POLICY_REPS ?? 20);
const REST_MS = Number(process.env.BENCH_KUBE_REST_MS ?? 10_000);
const NAMESPACES = 10;
const CONCURRENCY = 32;
const AMBIT_BIN = join(ROOT, 'bin', 'ambit');
const NETNS_PREFIX = 'ambit-bench-kube-';
const netnsName = (i: number) => `${NETNS_PREFIX}${i}`;
const hostVeth = (i: number) => `akbench${i}`;
const hostIP = (i: number) => `10.251.${i}.1`;
const nsIP = (i: number) => `10.251.${i}.2`;

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
}

/** Kills what runs in our netns (also an interrupted run's leftovers) and removes them with their veths. */
function removeNetns(): void {
  const list = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout ?? '';
  for (const name of list.split('\n').map((l) => l.split(' ')[0]).filter((n) => n.startsWith(NETNS_PREFIX))) {
    const pids = spawnSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).stdout?.split('\n').filter(Boolean) ?? [];
    for (const pid of pids) try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ }
    spawnSync('ip', ['netns', 'del', name]);
  }
  for (let i = 1; i <= 64; i++) spawnSync('ip', ['link', 'del', hostVeth(i)], { stdio: 'ignore' });
}

function setupNetns(i: number): void {
  const ns = netnsName(i);
  sh('ip', ['netns', 'add', ns]);
  sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  sh('ip', ['link', 'add', hostVeth(i), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
  sh('ip', ['addr', 'add', `${hostIP(i)}/30`, 'dev', hostVeth(i)]);
  sh('ip', ['link', 'set', hostVeth(i), 'up']);
  sh('ip', ['-n', ns, 'addr', 'add', `${nsIP(i)}/30`, 'dev', 'eth0']);
  sh('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
  sh('ip', ['-n', ns, 'route', 'add', 'default', 'via', hostIP(i)]);
}

/** Appends stdout+stderr of `cmd` to `log`, logging JSON lines (the controller has no --log-format flag). */
function spawnLogged(cmd: string, args: string[], log: string): ChildProcess {
  const fd = openSync(log, 'a');
  try {
    return spawn(cmd, args, { stdio: ['ignore', fd, fd], env: { ...process.env, AMBIT_LOG_FORMAT: 'json' } });
  } finally {
    closeSync(fd);
  }
}

/** Reads a JSON-lines log incrementally (agent and controller logs grow; re-reading them all is slow). */
class LogTail {
  readonly path: string;
  #offset = 0;
  #rest = '';
  readonly lines: Record<string, unknown>[] = [];
  constructor(path: string) { this.path = path; }
  poll(): Record<string, unknown>[] {
    let fd: number;
    try { fd = openSync(this.path, 'r'); } catch { return []; }
    const fresh: Record<string, unknown>[] = [];
    try {
      const buf = Buffer.alloc(1 << 20);
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, this.#offset);
        if (n <= 0) break;
        this.#offset += n;
        const text = this.#rest + buf.subarray(0, n).toString('utf8');
        const parts = text.split('\n');
        this.#rest = parts.pop() ?? '';
        for (const p of parts) {
          if (!p.startsWith('{')) continue;
          try { fresh.push(JSON.parse(p) as Record<string, unknown>); } catch { /* not ours */ }
        }
      }
    } finally {
      closeSync(fd);
    }
    this.lines.push(...fresh);
    return fresh;
  }
  /** The first line after `sinceMs` (epoch) matching `pred`, polled until `timeoutMs`. */
  async waitFor(what: string, sinceMs: number, pred: (l: Record<string, unknown>) => boolean, timeoutMs = 180_000): Promise<{ line: Record<string, unknown>; atMs: number }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      this.poll();
      const line = this.lines.find((l) => Date.parse(String(l.time)) >= sinceMs && pred(l));
      if (line) return { line, atMs: Date.parse(String(line.time)) };
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (log ${this.path})`);
      await sleep(20);
    }
  }
}

/** Runs `fn` over `items` with at most CONCURRENCY requests in flight. */
async function pool<T>(items: T[], fn: (x: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  const worker = async () => { while (next < items.length) await fn(items[next++]); };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, items.length) }, worker));
}

async function createOrKeep(client: KubeClient, path: string, body: unknown): Promise<void> {
  try { await client.request('POST', path, body); } catch (err) { if (statusOf(err) !== 409) throw err; }
}

function nodeStatus(): Record<string, unknown> {
  const now = new Date().toISOString();
  return {
    capacity: { cpu: '4', memory: '8Gi', pods: '1000' }, allocatable: { cpu: '4', memory: '8Gi', pods: '1000' },
    conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'bench', lastHeartbeatTime: now, lastTransitionTime: now }],
  };
}

/** Nodes, namespaces, Services, Pods with their status; returns seconds per phase. */
async function populate(client: KubeClient): Promise<Record<string, number>> {
  const t: Record<string, number> = {};
  let t0 = performance.now();
  for (let i = 1; i <= NODES; i++) {
    await createOrKeep(client, '/api/v1/nodes', { apiVersion: 'v1', kind: 'Node', metadata: { name: `node-${i}`, labels: { 'kubernetes.io/hostname': `node-${i}` } } });
    await client.request('PATCH', `/api/v1/nodes/node-${i}/status`, { status: nodeStatus() }, { contentType: MERGE_PATCH });
  }
  for (let n = 0; n < NAMESPACES; n++) {
    await createOrKeep(client, '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: `scale-${n}`, labels: { 'istio.io/dataplane-mode': 'ambient' } } });
  }
  // The API server refuses pods in a namespace until kube-controller-manager made its default ServiceAccount.
  for (let n = 0; n < NAMESPACES; n++) {
    for (let tries = 0; ; tries++) {
      try { await client.request('GET', `/api/v1/namespaces/scale-${n}/serviceaccounts/default`); break; } catch (err) {
        if (tries > 600) throw err;
        await sleep(100);
      }
    }
  }
  t.namespaces = (performance.now() - t0) / 1000;
  t0 = performance.now();
  await pool([...Array(SERVICES).keys()], (s) => createOrKeep(client, `/api/v1/namespaces/scale-${s % NAMESPACES}/services`, {
    apiVersion: 'v1', kind: 'Service', metadata: { name: `s-${s}`, namespace: `scale-${s % NAMESPACES}` },
    spec: { selector: { app: `s-${s}` }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] },
  }));
  t.services = (performance.now() - t0) / 1000;
  t0 = performance.now();
  await pool([...Array(PODS).keys()], async (p) => {
    const ns = `scale-${p % NAMESPACES}`;
    const ip = `10.244.${Math.floor(p / 250)}.${(p % 250) + 2}`;
    await createOrKeep(client, `/api/v1/namespaces/${ns}/pods`, {
      apiVersion: 'v1', kind: 'Pod', metadata: { name: `w-${p}`, namespace: ns, labels: { app: `s-${p % SERVICES}` } },
      spec: { nodeName: `node-${(p % NODES) + 1}`, serviceAccountName: 'default', containers: [{ name: 'c', image: 'ambit/sleep', ports: [{ containerPort: 8080 }] }] },
    });
    const now = new Date().toISOString();
    await client.request('PATCH', `/api/v1/namespaces/${ns}/pods/w-${p}/status`, {
      status: {
        phase: 'Running', podIP: ip, podIPs: [{ ip }], hostIP: nsIP((p % NODES) + 1), startTime: now,
        conditions: [{ type: 'Ready', status: 'True', lastTransitionTime: now }, { type: 'ContainersReady', status: 'True', lastTransitionTime: now }],
      },
    }, { contentType: MERGE_PATCH });
  });
  t.pods = (performance.now() - t0) / 1000;
  return t;
}

/**
 * kube-controller-manager writes the EndpointSlices after the pods (at its client QPS, 20/s by
 * default), and every slice event makes the controller translate again; wait until that is done
 * so the measured phases are not that catch-up.
 */
async function waitSlices(client: KubeClient, timeoutMs = 600_000): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    const list = await client.request<{ items: { endpoints?: { conditions?: { ready?: boolean } }[] }[] }>('GET', '/apis/discovery.k8s.io/v1/endpointslices');
    const ready = list.items.reduce((n, sl) => n + (sl.endpoints ?? []).filter((e) => e.conditions?.ready).length, 0);
    if (list.items.length >= SERVICES && ready >= PODS) return (performance.now() - t0) / 1000;
    if (performance.now() - t0 > timeoutMs) throw new Error(`only ${list.items.length} EndpointSlices with ${ready} ready endpoints after ${timeoutMs} ms (kube-controller-manager log in the control plane's logs/)`);
    await sleep(1000);
  }
}

function policyYaml(r: number): string {
  return `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: bench-${r}, namespace: scale-${r % NAMESPACES} }
spec:
  selector: { matchLabels: { app: s-${r % SERVICES} } }
  action: ALLOW
  rules: [{ from: [{ source: { principals: ["cluster.local/ns/other-${r}/sa/default"] } }] }]
`;
}

/** Samples a process's CPU time and peak RSS while `work` runs. */
interface Watched<T> { result: T; cpuSec: number; wallSec: number; peakRssMiB: number; end: ProcSample; from: number; to: number }
async function watch<T>(pid: () => number, work: () => Promise<T>): Promise<Watched<T>> {
  const from = Date.now();
  const before = sample(pid());
  let peak = before.rssMiB;
  const timer = setInterval(() => { try { peak = Math.max(peak, sample(pid()).rssMiB); } catch { /* restarting */ } }, 200);
  let result: T;
  try { result = await work(); } finally { clearInterval(timer); }
  const end = sample(pid());
  return { result, cpuSec: end.cpuSec - before.cpuSec, wallSec: (end.at - before.at) / 1000, peakRssMiB: Math.max(peak, end.rssMiB), end, from, to: Date.now() };
}

export async function runKubeScale(): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'ambit-kube-scale-'));
  const kubeDir = join(dir, 'kube');
  let controller: ChildProcess | undefined;
  let cp: KubeControlPlane | undefined;
  let heartbeat: NodeJS.Timeout | undefined;
  const cleanup = async (): Promise<void> => {
    if (heartbeat) clearInterval(heartbeat);
    controller?.kill('SIGKILL');
    removeNetns();
    await (cp ? cp.stop() : stopKubeControlPlane(kubeDir)).catch(() => stopKubeControlPlane(kubeDir));
    rmSync(dir, { recursive: true, force: true });
  };
  const onSignal = (): void => { void cleanup().finally(() => process.exit(130)); };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  removeNetns();
  try {
    note(`kube scale: starting the control plane in ${kubeDir}`);
    cp = await startKubeControlPlane({ dir: kubeDir });
    const kubectl = (args: string[], input?: string) => {
      const r = spawnSync(join(cp!.kubectlDir, 'kubectl'), ['--kubeconfig', cp!.kubeconfig, ...args], { encoding: 'utf8', input, maxBuffer: 64 << 20 });
      if (r.status !== 0) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    kubectl(['apply', '--server-side', '-k', join(ROOT, 'controller', 'crds')]);
    kubectl(['wait', '--for=condition=Established', 'crd', '--all', '--timeout=60s']);
    const client = new KubeClient(loadKubeConfig({ kubeconfig: cp.kubeconfig }));
    const created = await populate(client);
    // kube-controller-manager marks nodes whose status stops moving NotReady, and their pods not Ready.
    heartbeat = setInterval(() => {
      for (let i = 1; i <= NODES; i++) void client.request('PATCH', `/api/v1/nodes/node-${i}/status`, { status: nodeStatus() }, { contentType: MERGE_PATCH }).catch(() => {});
    }, 10_000);
    note(`kube scale: created ${SERVICES} services in ${fmt(created.services, 1)} s, ${PODS} pods (+status) in ${fmt(created.pods, 1)} s`);
    created.slices = await waitSlices(client);
    note(`kube scale: EndpointSlices complete ${fmt(created.slices, 1)} s later`);

    for (let i = 1; i <= NODES; i++) setupNetns(i);
    const caDir = join(dir, 'ca');
    const ca = await CertificateAuthority.loadOrCreate(caDir);
    const agentDirs: string[] = [];
    for (let i = 1; i <= NODES; i++) {
      const d = join(dir, `agent-${i}`);
      mkdirSync(d, { recursive: true });
      const creds = await ca.issueAgentCredentials(`node-${i}`);
      writeFileSync(join(d, 'agent-cert.pem'), creds.certPem);
      writeFileSync(join(d, 'agent-key.pem'), creds.keyPem, { mode: 0o600 });
      writeFileSync(join(d, 'root-cert.pem'), creds.rootsPem);
      agentDirs.push(d);
    }
    const port = await freePort();
    const listen = `${hostIP(1)}:${port}`;
    const ctlLog = join(dir, 'controller.log');
    const ctl = new LogTail(ctlLog);
    const startController = () => {
      controller = spawnLogged(AMBIT_BIN, ['controller', '--kubeconfig', cp!.kubeconfig, '--ca-dir', caDir, '--listen', listen], ctlLog);
      return controller;
    };
    /** The controller's translations ('config updated') between two times (epoch ms). */
    const updates = (from: number, to: number) => { ctl.poll(); return ctl.lines.filter((l) => l.msg === 'config updated' && Date.parse(String(l.time)) >= from && Date.parse(String(l.time)) <= to).length; };
    const full = (l: Record<string, unknown>) => l.msg === 'config updated' && Number(l.workloads) >= PODS;

    // Initial load: controller start (list + translate) and every agent's first sync.
    // Baseline: the same agent with no config yet (the controller is not listening yet; it retries).
    const agentArgs = (i: number, runDir = agentDirs[i - 1]) => ['netns', 'exec', netnsName(i), AMBIT_BIN, 'agent', '--node', `node-${i}`, '--controller', listen,
      '--creds-dir', agentDirs[i - 1], '--run-dir', runDir, '--log-level', 'info,agent.config:debug'];
    mkdirSync(join(dir, 'agent-bare'));
    const bare = spawnLogged('ip', agentArgs(1, join(dir, 'agent-bare')), join(dir, 'agent-bare.log'));
    await sleep(REST_MS);
    const bareMem = sample(bare.pid!);
    bare.kill('SIGKILL');
    await new Promise((r) => bare.exitCode !== null ? r(undefined) : bare.once('exit', r));

    const tCtl = Date.now();
    startController();
    const initial = await watch(() => controller!.pid!, async () => {
      const ready = await ctl.waitFor('the controller to see every pod', tCtl, full);
      const tAgents = Date.now();
      const tails: LogTail[] = [];
      for (let i = 1; i <= NODES; i++) {
        const log = join(dir, `agent-${i}.log`);
        tails.push(new LogTail(log));
        spawnLogged('ip', agentArgs(i), log);
      }
      const synced = await Promise.all(tails.map((t, i) => t.waitFor(`agent node-${i + 1} to sync`, tAgents, (l) => l.msg === 'config synced with the controller')));
      return { ctlReadyMs: ready.atMs - tCtl, tails, synced, syncMs: synced.map((s) => s.atMs - tAgents), counts: ready.line };
    });
    const { tails } = initial.result;
    const agentPid = (i: number) => Number(spawnSync('ip', ['netns', 'pids', netnsName(i)], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean)
      .find((p) => { try { return spawnSync('cat', [`/proc/${p}/cmdline`], { encoding: 'utf8' }).stdout.includes('agent'); } catch { return false; } }));
    note(`kube scale: controller saw ${PODS} pods after ${initial.result.ctlReadyMs} ms; agents synced in ${initial.result.syncMs.join(', ')} ms`);

    const rest = async () => { await sleep(REST_MS / 2); return watch(() => controller!.pid!, () => sleep(REST_MS / 2)); };
    const rest1 = await rest();
    const agentMem = Array.from({ length: NODES }, (_, i) => sample(agentPid(i + 1)));
    const workloadsSeen = tails.map((t) => Number(t.lines.find((l) => l.msg === 'config synced with the controller')?.workloads ?? 0));
    const servicesSeen = tails.map((t) => Number(t.lines.find((l) => l.msg === 'config synced with the controller')?.services ?? 0));

    // Policy propagation: kubectl apply until every agent applied (and ACKed) the authorization.
    const props: { totalMs: number; kubectlMs: number; slowestAgentMs: number }[] = [];
    const propWatch = await watch(() => controller!.pid!, async () => {
      for (let r = 0; r < REPS; r++) {
        const t0 = Date.now();
        kubectl(['apply', '-f', '-'], policyYaml(r));
        const kubectlMs = Date.now() - t0;
        const seen = await Promise.all(tails.map((t, i) => t.waitFor(`agent node-${i + 1} to apply bench-${r}`, t0,
          (l) => l.msg === 'config applied' && l.typeUrl === AUTHORIZATION_TYPE && Number(l.upserts) > 0, 60_000)));
        const totalMs = Math.max(...seen.map((s) => s.atMs)) - t0;
        props.push({ totalMs, kubectlMs, slowestAgentMs: totalMs });
        await sleep(200);
      }
    });
    note(`kube scale: policy propagation ${props.map((p) => p.totalMs).join(', ')} ms`);

    // Full resync: kill -9 the controller, start it again, until every agent is synced again.
    controller!.kill('SIGKILL');
    await new Promise((r) => controller!.once('exit', r));
    const tRestart = Date.now();
    startController();
    const resync = await watch(() => controller!.pid!, async () => {
      const ready = await ctl.waitFor('the restarted controller to see every pod', tRestart, full);
      const synced = await Promise.all(tails.map((t, i) => t.waitFor(`agent node-${i + 1} to resync`, tRestart, (l) => l.msg === 'config synced with the controller')));
      return { ctlReadyMs: ready.atMs - tRestart, syncMs: synced.map((s) => s.atMs - tRestart) };
    });
    note(`kube scale: resync after restart ${resync.result.syncMs.join(', ')} ms`);
    const rest2 = await rest();

    const c = initial.result.counts;
    let out = `### Kubernetes scale (real API server; ${SERVICES} Services, ${PODS} Pods without processes, ${NODES} nodes, one agent per node)\n\n`;
    out += `Objects created through the API in ${fmt(created.services, 1)} s (services) + ${fmt(created.pods, 1)} s (pods and their status); `
      + `kube-controller-manager finished the EndpointSlices ${fmt(created.slices, 1)} s later, before the controller started. `
      + `Controller config: ${c.workloads} workloads, ${c.services} services.\n\n`;
    out += table(['phase', 'controller ready ms', 'agents synced ms (max)', 'agents synced ms (each)'], [
      ['initial start (agents started once the controller has every pod)', initial.result.ctlReadyMs, Math.max(...initial.result.syncMs), initial.result.syncMs.join(', ')],
      ['after controller kill -9 + restart (from the restart)', resync.result.ctlReadyMs, Math.max(...resync.result.syncMs), resync.result.syncMs.join(', ')],
    ]) + '\n';
    const tot = props.map((p) => p.totalMs);
    const kc = props.map((p) => p.kubectlMs);
    out += table(['policy propagation (kubectl apply -> every agent applied + ACKed)', 'runs', 'p50 ms', 'p99 ms', 'min ms', 'max ms', 'of which kubectl p50 ms'], [
      [`AuthorizationPolicy, ${NODES} agents`, props.length, fmt(median(tot), 0), fmt(percentile(tot, 99), 0), fmt(Math.min(...tot), 0), fmt(Math.max(...tot), 0), fmt(median(kc), 0)],
    ]) + '\n';
    const cpuPct = (w: { cpuSec: number; wallSec: number }) => fmt(100 * w.cpuSec / w.wallSec, 1);
    const row = (label: string, w: Watched<unknown>) => [label, fmt(w.wallSec, 1), fmt(w.cpuSec, 2), cpuPct(w), fmt(w.peakRssMiB, 1), fmt(w.end.rssMiB, 1), updates(w.from, w.to)];
    out += table(['controller', 'wall s', 'CPU s', 'CPU %', 'peak RSS MiB', 'end RSS MiB', 'translations'], [
      row('initial list + agents\' first sync', initial),
      row('at rest after the initial sync', rest1),
      row(`${REPS} policy applies`, propWatch),
      row('restart: list + agents\' resync', resync),
      row('at rest after the restart', rest2),
    ]) + '\n';
    const per1000 = (m: ProcSample, w: number) => fmt(w ? 1000 * (m.rssMiB - bareMem.rssMiB) / w : NaN, 1);
    out += table(['agent', 'workloads held', 'services held', 'RSS MiB', 'anon MiB', 'RSS over no-config MiB', 'MiB per 1000 workloads'], [
      ['no config yet (baseline)', 0, 0, fmt(bareMem.rssMiB, 1), fmt(bareMem.rssAnonMiB, 1), '–', '–'],
      ...agentMem.map((m, i) => [`node-${i + 1}`, workloadsSeen[i], servicesSeen[i], fmt(m.rssMiB, 1), fmt(m.rssAnonMiB, 1), fmt(m.rssMiB - bareMem.rssMiB, 1), per1000(m, workloadsSeen[i])]),
    ]);
    out += `\n_Agent RSS after ${REST_MS / 1000} s at rest: the baseline before it ever reached the controller, the others after the initial sync. `
      + `Per 1000 workloads = (RSS − baseline) / workloads × 1000; it includes the ${SERVICES} services each agent also holds._\n`;
    return out;
  } finally {
    await cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

if (import.meta.main) process.stdout.write(await runKubeScale());
