/**
 * The mesh driven by kubectl alone on `ambit local up --kubernetes` (issue 4, "Done means"): a
 * namespace, ServiceAccounts, a Deployment of ambit/echo on node-2 with a Service and a client pod on
 * node-1 are created with kubectl; `kubectl label ns` enrolls the running pods (traffic over HBONE:
 * the server sees the client pod IP, node-2's agent logs the client's SPIFFE id, ztunnel-config
 * lists the connection) without restarting them; an AuthorizationPolicy applied with kubectl denies
 * within a second and is Accepted, an invalid one is refused by the API server naming the field, an
 * L7 one shows UnsupportedValue; deleting the policy allows again; removing the label makes traffic
 * plain again, still without restarts; `down` leaves nothing. Debug: logs in /run/ambit/<instance>/logs.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { podNetnsName } from '../../src/local/instance.ts';
import { pidsMentioning } from '../../src/local/teardown.ts';
import { AMBIT, HTTP_GET, sweepLeftovers } from '../netns/local-helpers.ts';
import { eventually } from './kube-helpers.ts';
import { LocalKube } from './local-kube-helpers.ts';

const kube = new LocalKube();
const INSTANCE = kube.instance;
const STATE = kube.state;
const ambit = (args: string[], input?: string) => kube.ambit(args, input);
const hint = () => kube.hint();
const kubectl = (args: string[], input?: string) => kube.kubectl(args, input);
const kubectlOk = (args: string[], input?: string) => kube.kubectlOk(args, input);
const NS = 'k5mesh';
const sh = (cmd: string, args: string[]) => spawnSync(cmd, args, { encoding: 'utf8' }).stdout ?? '';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface PodJson {
  metadata: { name: string; uid: string; annotations?: Record<string, string> };
  spec: { nodeName?: string };
  status?: { phase?: string; podIP?: string; conditions?: { type: string; status: string }[]; containerStatuses?: { restartCount: number }[] };
}
const kubePods = (): PodJson[] => (JSON.parse(kubectlOk(['get', 'pods', '-n', NS, '-o', 'json'])) as { items: PodJson[] }).items;
const isReady = (p: PodJson) => p.status?.phase === 'Running' && !!p.status.podIP && p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;

const APP = `
apiVersion: v1
kind: ServiceAccount
metadata: {name: echo-sa, namespace: ${NS}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client-sa, namespace: ${NS}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: ${NS}}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      nodeName: node-2
      serviceAccountName: echo-sa
      containers:
      - {name: echo, image: ambit/echo, ports: [{containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: ${NS}}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: ${NS}, labels: {app: client}}
spec:
  nodeName: node-1
  serviceAccountName: client-sa
  containers:
  - {name: c, image: ambit/sleep}
`;

const policy = (name: string, spec: string) => `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ${name}, namespace: ${NS}}
spec:
${spec}`;
const DENY_NS = policy('deny-own-ns', `  selector: {matchLabels: {app: echo}}
  action: DENY
  rules: [{from: [{source: {namespaces: [${NS}]}}]}]`);

/** Opens a new connection to VIP:80 every 50 ms; prints "ok|no <started> <ended> <how>" (ms since epoch). */
const PROBER = `const net = require('node:net'); const vip = process.argv[1];
const once = () => { const t = Date.now(); let got = ''; let done = false;
  const s = net.connect(80, vip, () => s.write('GET /probe HTTP/1.1\\r\\nHost: echo\\r\\nConnection: close\\r\\n\\r\\n'));
  const end = (why) => { if (done) return; done = true; clearTimeout(timer); s.destroy();
    console.log((/^HTTP\\/1\\.1 200/.test(got) ? 'ok ' : 'no ') + t + ' ' + Date.now() + ' ' + why); setTimeout(once, 50); };
  const timer = setTimeout(() => end('timeout'), 1000);
  s.on('data', (d) => { got += d; if (/^HTTP\\/1\\.1 200/.test(got)) end('answered'); });
  s.on('error', (e) => end(e.code || e.message)); s.on('close', () => end('closed')); };
once();`;

/** A keep-alive connection held open (for ztunnel-config connections); prints "ok" per answer. */
const HOLDER = `const s = require('node:net').connect(80, process.argv[1], () => ask());
const ask = () => s.write('GET /held HTTP/1.1\\r\\nHost: echo\\r\\n\\r\\n');
s.on('data', (d) => { if (/HTTP\\/1\\.1 200/.test(d.toString())) console.log('ok'); setTimeout(ask, 300); });
s.on('error', (e) => console.log('error ' + e.message)); s.on('close', () => { console.log('closed'); process.exit(1); });`;

let vip = '';
let netns: Record<string, string> = {};
let before0: Record<string, { uid: string; inode: number; pids: string[] }> = {};
const names = () => Object.keys(netns).sort();
const ipOf = (name: string) => kubePods().find((p) => p.metadata.name === name)!.status!.podIP!;
const inPod = (name: string, cmd: string, args: string[]) => sh('ip', ['netns', 'exec', netns[name]!, cmd, ...args]);
const hasRules = (name: string) => inPod(name, 'iptables-save', []).includes('AMBIT_');
const meshPorts = (name: string) => [...inPod(name, 'ss', ['-Hltn']).matchAll(/:(1500[168])\s/g)].length;
const identityOf = (name: string) => ({ inode: statSync(`/run/netns/${netns[name]}`).ino, pids: sh('ip', ['netns', 'pids', netns[name]!]).trim().split('\n').filter(Boolean) });
/** Same pod object, never restarted, same netns and the same processes. */
function notRestarted(): void {
  const now = kubePods();
  for (const name of names()) {
    const was = before0[name]!;
    const p = now.find((x) => x.metadata.name === name);
    assert.ok(p, `${name} still exists${hint()}`);
    assert.equal(p.metadata.uid, was.uid, `${name}: same pod uid`);
    assert.deepEqual(p.status?.containerStatuses?.map((c) => c.restartCount), [0], `${name}: restartCount 0`);
    const id = identityOf(name);
    assert.equal(id.inode, was.inode, `${name}: same netns`);
    assert.ok(was.pids.length > 0 && was.pids.every((x) => id.pids.includes(x)), `${name}: same processes (${was.pids} -> ${id.pids})${hint()}`);
  }
}
const agentLog = () => readFileSync(join(STATE, 'logs', 'agent-node-2.log'), 'utf8');
const hboneFromClient = () => agentLog().split('\n').filter((l) => l.includes('connection complete') && l.includes(`spiffe://cluster.local/ns/${NS}/sa/client-sa`)).length;

function get(path: string): { ok: boolean; sourceIp?: string; err: string } {
  const r = ambit(['exec', `${NS}/client`, '--', 'node', HTTP_GET, `http://${vip}${path}`, '--timeout', '3000']);
  if (r.code !== 0) return { ok: false, err: r.stdout + r.stderr };
  return { ok: true, sourceIp: (JSON.parse(r.stdout.trim().split('\n')[0]!) as { sourceIp: string }).sourceIp, err: '' };
}
async function until(what: string, cond: () => boolean, patienceMs = 15_000): Promise<number> {
  const started = Date.now();
  while (!cond()) {
    if (Date.now() - started > patienceMs) assert.fail(`${what}: not within ${patienceMs} ms${hint()}`);
    await sleep(200);
  }
  return Date.now() - started;
}
const enrolled = (name: string) => hasRules(name) && meshPorts(name) === 3;
const released = (name: string) => !hasRules(name) && meshPorts(name) === 0;
const condition = (name: string) => {
  const r = kubectl(['get', 'authorizationpolicies.security.istio.io', '-n', NS, name, '-o', 'json']);
  if (r.code !== 0) return undefined;
  const o = JSON.parse(r.stdout) as { metadata: { generation: number }; status?: { conditions?: { type: string; status: string; reason: string; message: string; observedGeneration?: number }[] } };
  return o.status?.conditions?.find((c) => c.type === 'Accepted' && c.observedGeneration === o.metadata.generation);
};

describe(`the mesh with kubectl only (instance ${INSTANCE})`, () => {
  let holder: ChildProcess | undefined;
  let prober: ChildProcess | undefined;
  let probeOut = '';
  const spawnInClient = (script: string, onOut: (s: string) => void) => {
    const c = spawn(AMBIT, ['local', 'exec', `${NS}/client`, '--', 'node', '-e', script, vip], { env: { ...process.env, AMBIT_LOCAL_INSTANCE: INSTANCE }, stdio: ['ignore', 'pipe', 'pipe'] });
    c.stdout!.on('data', (d: Buffer) => onOut(d.toString()));
    c.stderr!.on('data', (d: Buffer) => onOut(d.toString()));
    return c;
  };
  const probes = () => [...probeOut.matchAll(/^(ok|no) (\d+) (\d+) (\S+)$/gm)].map((m) => ({ ok: m[1] === 'ok', at: Number(m[2]), end: Number(m[3]), why: m[4] }));

  before(() => {
    sweepLeftovers();
    const up = ambit(['up', '--kubernetes', '--nodes', '2']);
    assert.equal(up.code, 0, up.stdout + up.stderr + hint());
    kube.locate();
  });
  after(() => {
    holder?.kill();
    prober?.kill();
    ambit(['down']);
  });

  it('kubectl creates the namespace, Deployment, Service and client; traffic is plain', async () => {
    kubectlOk(['create', 'namespace', NS]);
    kubectlOk(['apply', '-f', '-'], APP);
    const all = await eventually('3 ready pods', () => { const p = kubePods(); return p.length === 3 && p.every(isReady) ? p : undefined; }, 90_000);
    for (const p of all) assert.equal(p.spec.nodeName, p.metadata.name === 'client' ? 'node-1' : 'node-2');
    vip = kubectlOk(['get', 'svc', '-n', NS, 'echo', '-o', 'jsonpath={.spec.clusterIP}']).trim();
    netns = Object.fromEntries(all.map((p) => [p.metadata.name, podNetnsName(INSTANCE, p.metadata.uid)]));
    for (const n of names()) assert.ok(existsSync(`/run/netns/${netns[n]}`), `${n}: netns ${netns[n]} exists${hint()}`);
    assert.equal(names().length, 3);
    before0 = Object.fromEntries(all.map((p) => [p.metadata.name, { uid: p.metadata.uid, ...identityOf(p.metadata.name) }]));
    for (const n of names()) assert.ok(released(n), `${n}: no in-pod rules or mesh listeners yet`);
    let r = get('/plain');
    await until('the Service answers', () => r.ok || (r = get('/plain')).ok);
    assert.equal(r.sourceIp, ipOf('client'));
    assert.equal(hboneFromClient(), 0, 'nothing over HBONE yet');
  });

  it('kubectl label ns istio.io/dataplane-mode=ambient: HBONE between its pods, no restart', async () => {
    kubectlOk(['label', 'namespace', NS, 'istio.io/dataplane-mode=ambient']);
    const took = await until('every pod enrolled (rules and listeners)', () => names().every(enrolled));
    process.stdout.write(`# kubectl label -> pods enrolled in ${took} ms\n`);
    await until('a new connection carried over HBONE', () => {
      const r = get('/meshed');
      return r.ok && r.sourceIp === ipOf('client') && hboneFromClient() > 0;
    });
    holder = spawnInClient(HOLDER, () => undefined);
    const client = ipOf('client');
    await until('ztunnel-config on node-2 lists the inbound connection from the client over HBONE', () => {
      const r = spawnSync(AMBIT, ['ztunnel-config', 'connections', '--node', 'node-2', '-o', 'json'], { env: { ...process.env, AMBIT_LOCAL_INSTANCE: INSTANCE }, encoding: 'utf8' });
      if (r.status !== 0) return false;
      const conns = (JSON.parse(r.stdout) as { connections: { direction: string; src: string; protocol: string; srcIdentity?: string }[] }).connections;
      return conns.some((c) => c.direction === 'inbound' && c.src.startsWith(`${client}:`) && c.protocol === 'HBONE'
        && c.srcIdentity === `spiffe://cluster.local/ns/${NS}/sa/client-sa`);
    });
    holder.kill();
    holder = undefined;
    notRestarted();
  });

  it('a pod created in the labelled namespace is enrolled by ambit-cni at ADD (labels read from the API server)', async () => {
    kubectlOk(['apply', '-f', '-'], `apiVersion: v1
kind: Pod
metadata: {name: late, namespace: ${NS}, labels: {app: late}}
spec:
  nodeName: node-2
  containers:
  - {name: c, image: ambit/sleep}
`);
    try {
      const pod = await eventually('pod late ready', () => kubePods().find((p) => p.metadata.name === 'late' && isReady(p)), 60_000);
      const ns = podNetnsName(INSTANCE, pod.metadata.uid);
      assert.match(sh('ip', ['netns', 'exec', ns, 'iptables-save']), /AMBIT_/, `late: in-pod rules${hint()}`);
      const lines = agentLog().split('\n').filter((l) => l.includes(`${NS}/late`));
      assert.ok(lines.some((l) => l.includes('pod added')), `the CNI handed late over as enrolled:\n${lines.join('\n')}${hint()}`);
      assert.ok(!lines.some((l) => l.includes('enrolled at run time')), `late was not left to run-time enrollment:\n${lines.join('\n')}`);
      // The plugin's kubeconfig holds a ServiceAccount token, readable by root only.
      const kc = join(STATE, 'cni', 'ambit-cni.kubeconfig');
      assert.equal(statSync(kc).mode & 0o777, 0o600);
      assert.equal((JSON.parse(readFileSync(kc, 'utf8')) as { users: { user: { token?: string } }[] }).users[0]!.user.token?.split('.').length, 3, 'a JWT');
    } finally {
      kubectl(['delete', 'pod', '-n', NS, 'late', '--wait=false']);
    }
  });

  it('a DENY AuthorizationPolicy applied with kubectl refuses within a second and is Accepted', async () => {
    prober = spawnInClient(PROBER, (s) => { probeOut += s; });
    await until('the prober gets answers', () => probes().filter((p) => p.ok).length >= 3);
    kubectlOk(['apply', '-f', '-'], DENY_NS);
    const applied = Date.now();
    await until('a refused connection', () => probes().some((p) => !p.ok && p.at >= applied), 5000);
    const first = probes().find((p) => !p.ok && p.at >= applied)!;
    // Conservative: until the refused connection ended (it may have started before the policy arrived).
    const tookMs = first.end - applied;
    process.stdout.write(`# kubectl apply returned -> first refused connection (${first.why}) started ${first.at - applied} ms, ended ${tookMs} ms later\n`);
    assert.ok(tookMs < 1000, `refused within one second of kubectl apply (${tookMs} ms)`);
    await sleep(500);
    const later = probes().filter((p) => p.at >= first.at + 200);
    assert.ok(later.length > 0 && later.every((p) => !p.ok), `every later connection refused: ${JSON.stringify(later)}`);
    const c = await eventually('Accepted condition', () => condition('deny-own-ns'), 10_000);
    assert.equal(c.status, 'True');
    assert.equal(c.reason, 'Accepted', c.message);
  });

  it('an invalid policy is refused by the API server naming the field; an L7 one shows UnsupportedValue', async () => {
    const bad = kubectl(['apply', '-f', '-'], policy('bad-action', '  action: PERMIT\n  rules: [{}]'));
    assert.notEqual(bad.code, 0, 'refused');
    assert.match(bad.stderr, /spec\.action/, bad.stderr);
    assert.match(bad.stderr, /PERMIT/, bad.stderr);
    process.stdout.write(`# API server: ${bad.stderr.split('\n').find((l) => l.includes('spec.action'))?.trim()}\n`);
    assert.equal(kubectl(['get', 'authorizationpolicies.security.istio.io', '-n', NS, 'bad-action']).code, 1, 'not stored');
    kubectlOk(['apply', '-f', '-'], policy('l7-methods', `  selector: {matchLabels: {app: nothing-here}}
  action: ALLOW
  rules: [{to: [{operation: {methods: [GET]}}]}]`));
    const c = await eventually('a condition on the L7 policy', () => condition('l7-methods'), 10_000);
    assert.equal(c.reason, 'UnsupportedValue', JSON.stringify(c));
    assert.match(c.message, /methods/);
    kubectlOk(['delete', 'authorizationpolicies.security.istio.io', '-n', NS, 'l7-methods']);
  });

  it('deleting the policy with kubectl allows again', async () => {
    kubectlOk(['delete', 'authorizationpolicies.security.istio.io', '-n', NS, 'deny-own-ns']);
    const deleted = Date.now();
    await until('an answered connection', () => probes().some((p) => p.ok && p.at >= deleted), 5000);
    process.stdout.write(`# kubectl delete -> first answered connection ${probes().find((p) => p.ok && p.at >= deleted)!.at - deleted} ms later\n`);
    prober?.kill();
    prober = undefined;
    const r = get('/allowed-again');
    assert.ok(r.ok, r.err + hint());
    assert.equal(r.sourceIp, ipOf('client'));
  });

  it('controller away: agents keep serving; killed and restarted by its supervisor, agents resync (a policy applied meanwhile takes effect)', async () => {
    const controllerPids = () => pidsMentioning(join(STATE, 'ca')).filter((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('controller'));
    const [pid] = controllerPids();
    assert.ok(pid, `the controller process${hint()}`);
    probeOut = '';
    prober = spawnInClient(PROBER, (s) => { probeOut += s; });
    await until('the prober gets answers', () => probes().filter((p) => p.ok).length >= 3);
    process.kill(pid, 'SIGSTOP');
    let killed = 0;
    try {
      // Hung controller: the API server takes the policy, nobody pushes it; traffic goes on.
      kubectlOk(['apply', '-f', '-'], DENY_NS);
      const stopped = Date.now();
      await sleep(2000);
      const meanwhile = probes().filter((p) => p.at >= stopped);
      assert.ok(meanwhile.length >= 5 && meanwhile.every((p) => p.ok), `served on the last good state while the controller hung: ${JSON.stringify(meanwhile)}${hint()}`);
      process.kill(pid, 'SIGKILL');
      killed = Date.now();
    } finally {
      if (!killed) process.kill(pid, 'SIGCONT');
    }
    // The supervisor starts a new controller; it lists from the API server; the agents reconnect and resync.
    await until('a new controller process', () => controllerPids().some((p) => p !== pid), 15_000);
    await until('a refused connection after the restart', () => probes().some((p) => !p.ok && p.at >= killed), 20_000);
    const first = probes().find((p) => !p.ok && p.at >= killed)!;
    process.stdout.write(`# controller SIGKILLed -> policy applied meanwhile enforced after ${first.end - killed} ms (restart + resync)\n`);
    assert.ok(probes().filter((p) => p.at < killed && p.at >= killed - 2000).every((p) => p.ok), 'nothing refused before the restart');
    kubectlOk(['delete', 'authorizationpolicies.security.istio.io', '-n', NS, 'deny-own-ns']);
    const deleted = Date.now();
    await until('answered again', () => probes().some((p) => p.ok && p.at >= deleted), 5000);
    prober?.kill();
    prober = undefined;
  });

  it('kubectl label ns istio.io/dataplane-mode-: traffic plain again, pods not restarted', async () => {
    kubectlOk(['label', 'namespace', NS, 'istio.io/dataplane-mode-']);
    const took = await until('every pod released', () => names().every(released));
    process.stdout.write(`# label removed -> pods released in ${took} ms\n`);
    for (const n of names()) assert.doesNotMatch(inPod(n, 'iptables-save', []), /AMBIT|1500[168]/, `${n}: iptables clean`);
    await sleep(500);
    const hbone = hboneFromClient();
    const r = get('/plain-again');
    assert.ok(r.ok, r.err + hint());
    assert.equal(r.sourceIp, ipOf('client'));
    await sleep(500);
    assert.equal(hboneFromClient(), hbone, 'no new HBONE connection logged');
    notRestarted();
  });

  it('ambit local down leaves no process, netns or state', () => {
    const d = ambit(['down']);
    assert.equal(d.code, 0, d.stdout + d.stderr);
    assert.equal(existsSync(STATE), false);
    assert.deepEqual(pidsMentioning(STATE + '/'), []);
    assert.deepEqual(sh('ip', ['netns', 'list']).split('\n').filter((l) => l.startsWith(`${INSTANCE}-`)), []);
  });
});
