/**
 * Policy memory: agent RSS with BENCH_POLICY_WORKLOADS workloads and BENCH_POLICIES
 * AuthorizationPolicies in its state (default 1000 each), against the same agent with an empty
 * mesh and with the workloads only, all in this run. Needs no local mesh: a controller and one
 * agent run in a private network namespace, the controller reading a generated manifest directory
 * (pods with their status filled in, as the API server would report them; nothing runs them).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateAuthority } from '../src/controller/ca/ca.ts';
import { fmt, note, ROOT, sample, sleep, table } from './lib.ts';

const WORKLOADS = Number(process.env.BENCH_POLICY_WORKLOADS ?? 1000);
const POLICIES = Number(process.env.BENCH_POLICIES ?? 1000);
const SETTLE_MS = Number(process.env.BENCH_SETTLE_MS ?? 20_000);
const NETNS = 'ambit-bench-polmem';
const AMBIT_BIN = join(ROOT, 'bin', 'ambit');

function podsYaml(n: number): string {
  const docs = ['apiVersion: v1\nkind: Namespace\nmetadata: { name: scale, labels: { istio.io/dataplane-mode: ambient } }'];
  for (let i = 0; i < n; i++) {
    const ip = `10.200.${Math.floor(i / 250)}.${(i % 250) + 2}`;
    docs.push(`apiVersion: v1
kind: Pod
metadata: { name: w-${i}, namespace: scale, uid: 00000000-0000-4000-8000-${String(i).padStart(12, '0')}, labels: { app: w-${i % 50}, version: v1 } }
spec: { nodeName: node-${(i % 2) + 1}, serviceAccountName: sa-${i % 20}, containers: [{ name: c, image: ambit/sleep }] }
status: { phase: Running, podIP: ${ip}, podIPs: [{ ip: ${ip} }], conditions: [{ type: Ready, status: "True" }] }`);
  }
  return docs.join('\n---\n') + '\n';
}

/** Half DENY from other namespaces on a port, half ALLOW for other principals, with selectors. */
function policiesYaml(n: number): string {
  const docs: string[] = [];
  for (let i = 0; i < n; i++) {
    const sel = `selector: { matchLabels: { app: w-${i % 50} } }`;
    docs.push(i % 2 === 0
      ? `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-${i}, namespace: scale }
spec: { ${sel}, action: DENY, rules: [{ from: [{ source: { namespaces: ["other-${i}"] } }], to: [{ operation: { ports: ["${8000 + (i % 100)}"] } }] }] }`
      : `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-${i}, namespace: scale }
spec: { ${sel}, action: ALLOW, rules: [{ from: [{ source: { principals: ["cluster.local/ns/other-${i}/sa/default"], ipBlocks: ["10.${i % 256}.0.0/16"] } }] }] }`);
  }
  return docs.join('\n---\n') + '\n';
}

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
}

/** `ambit ARGS` inside the private netns, stdout+stderr appended to `log`. */
function inNetns(args: string[], log: string): ChildProcess {
  const fd = openSync(log, 'a');
  try {
    return spawn('ip', ['netns', 'exec', NETNS, AMBIT_BIN, ...args], { stdio: ['ignore', fd, fd] });
  } finally {
    closeSync(fd); // the child has its own copy
  }
}

async function waitFor(what: string, fn: () => boolean, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

interface Measured { label: string; workloads: number; policies: number; rss: number; anon: number; syncMs: number }

async function measure(dir: string, label: string, workloads: number, policies: number): Promise<Measured> {
  const run = join(dir, label.replace(/\W+/g, '-'));
  const manifests = join(run, 'manifests');
  mkdirSync(manifests, { recursive: true });
  writeFileSync(join(manifests, 'pods.yaml'), podsYaml(workloads));
  if (policies > 0) writeFileSync(join(manifests, 'policies.yaml'), policiesYaml(policies));
  const caDir = join(run, 'ca');
  const ca = await CertificateAuthority.loadOrCreate(caDir);
  const creds = await ca.issueAgentCredentials('node-1');
  const agentDir = join(run, 'agent');
  mkdirSync(agentDir, { recursive: true });
  writeFileSync(join(agentDir, 'agent-cert.pem'), creds.certPem);
  writeFileSync(join(agentDir, 'agent-key.pem'), creds.keyPem, { mode: 0o600 });
  writeFileSync(join(agentDir, 'root-cert.pem'), creds.rootsPem);
  const ctlLog = join(run, 'controller.log');
  const agentLog = join(run, 'agent.log');
  const procs: ChildProcess[] = [];
  try {
    procs.push(inNetns(['controller', '--manifests', manifests, '--ca-dir', caDir, '--listen', '127.0.0.1:15012'], ctlLog));
    await waitFor('the controller', () => readText(ctlLog).includes('config updated'));
    const started = performance.now();
    const agent = inNetns(['agent', '--node', 'node-1', '--controller', '127.0.0.1:15012', '--creds-dir', agentDir, '--run-dir', agentDir], agentLog);
    procs.push(agent);
    await waitFor('the agent to sync', () => readText(agentLog).includes('config synced'));
    const syncMs = performance.now() - started;
    await sleep(SETTLE_MS); // let the heap settle after the burst (V8 shrinks an idle heap after a while)
    const samples = [sample(agent.pid!)];
    for (let i = 0; i < 2; i++) { await sleep(1000); samples.push(sample(agent.pid!)); }
    const last = samples[samples.length - 1];
    note(`policy memory: ${label}: RSS ${fmt(last.rssMiB, 1)} MiB; ${/config synced.*/.exec(readText(agentLog))?.[0] ?? ''}`);
    return { label, workloads, policies, rss: last.rssMiB, anon: last.rssAnonMiB, syncMs };
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    await sleep(300);
  }
}

function readText(path: string): string {
  try { return readFileSync(path, 'utf8'); } catch { return ''; }
}

/** Kills whatever runs in the private netns (also what an interrupted run left), then removes it. */
function removeNetns(): void {
  const pids = spawnSync('ip', ['netns', 'pids', NETNS], { encoding: 'utf8' }).stdout?.split('\n').filter(Boolean) ?? [];
  for (const pid of pids) try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ }
  spawnSync('ip', ['netns', 'del', NETNS]);
}

export async function runPolicyMemory(): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'ambit-polmem-'));
  const onSignal = (): void => {
    removeNetns();
    rmSync(dir, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  removeNetns();
  sh('ip', ['netns', 'add', NETNS]);
  sh('ip', ['-n', NETNS, 'link', 'set', 'lo', 'up']);
  const rows: Measured[] = [];
  try {
    rows.push(await measure(dir, 'empty mesh', 0, 0));
    rows.push(await measure(dir, `${WORKLOADS} workloads`, WORKLOADS, 0));
    rows.push(await measure(dir, `${WORKLOADS} workloads + ${POLICIES} policies`, WORKLOADS, POLICIES));
  } finally {
    removeNetns();
    rmSync(dir, { recursive: true, force: true });
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  const base = rows[0];
  return `### Agent memory with policies (one agent, controller in the same private netns)\n\n` + table(
    ['state', 'workloads', 'policies', 'RSS MiB', 'anon MiB', 'over empty MiB', 'sync ms'],
    rows.map((r) => [r.label, r.workloads, r.policies, fmt(r.rss, 1), fmt(r.anon, 1), fmt(r.rss - base.rss, 1), fmt(r.syncMs, 0)]),
  );
}

if (import.meta.main) process.stdout.write(await runPolicyMemory());
