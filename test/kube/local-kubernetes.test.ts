/**
 * `ambit local up --kubernetes`: the local runtime as kubelet of a real API server. Nodes are
 * registered, kubectl-created pods (a Deployment's, via the controller-manager's ReplicaSet, and a
 * plain one) are bound, run and reported Running/Ready with their IPs, the controller-manager's
 * EndpointSlice lists the ready pods, the Service VIP works (kube-proxy rules from the API server),
 * a pod deleted with kubectl stops and is replaced, `ambit local get/exec/logs/apply` keep working,
 * and `down` leaves nothing. Debug: logs in /run/ambit/<instance>/logs and .../kube/logs.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { pidsMentioning } from '../../src/local/teardown.ts';
import { HTTP_GET, sweepLeftovers } from '../netns/local-helpers.ts';
import { eventually } from './kube-helpers.ts';
import { LocalKube } from './local-kube-helpers.ts';

const kube = new LocalKube();
const INSTANCE = kube.instance;
const STATE = kube.state;
const ambit = (args: string[], input?: string) => kube.ambit(args, input);
const hint = () => kube.hint();
const kubectl = (args: string[], input?: string) => kube.kubectl(args, input);
const kubectlOk = (args: string[], input?: string) => kube.kubectlOk(args, input);

interface PodJson {
  metadata: { name: string; uid: string; deletionTimestamp?: string; annotations?: Record<string, string> };
  spec: { nodeName?: string };
  status?: { phase?: string; podIP?: string; hostIP?: string; conditions?: { type: string; status: string }[] };
}
const pods = (selector?: string): PodJson[] =>
  (JSON.parse(kubectlOk(['get', 'pods', '-n', 'r3k', ...(selector ? ['-l', selector] : []), '-o', 'json'])) as { items: PodJson[] }).items;
const isReady = (p: PodJson) => p.status?.phase === 'Running' && !!p.status.podIP && p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;

const APP = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: r3k}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - {name: echo, image: ambit/echo, ports: [{containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: r3k}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: r3k}
spec:
  containers:
  - {name: c, image: ambit/sleep}
`;

describe(`ambit local up --kubernetes (instance ${INSTANCE})`, () => {
  before(() => {
    sweepLeftovers();
    ambit(['down']);
  });
  after(() => { ambit(['down']); });

  it('starts the control plane and registers the nodes as Ready Node objects with renewed Leases', async () => {
    const up = ambit(['up', '--kubernetes', '--nodes', '2']);
    assert.equal(up.code, 0, up.stdout + up.stderr + hint());
    assert.match(up.stdout, /Kubernetes API server/);
    kube.locate();
    assert.equal(kube.kubeconfig, `${STATE}/kube/admin.kubeconfig`);
    const nodes = (JSON.parse(kubectlOk(['get', 'nodes', '-o', 'json'])) as { items: { metadata: { name: string }; spec: { podCIDR: string }; status: { addresses: { type: string; address: string }[]; conditions: { type: string; status: string }[] } }[] }).items;
    assert.deepEqual(nodes.map((n) => n.metadata.name).sort(), ['node-1', 'node-2']);
    for (const n of nodes) {
      assert.match(n.spec.podCIDR, /^10\.244\.\d+\.0\/24$/);
      assert.ok(n.status.addresses.some((a) => a.type === 'InternalIP' && /^10\.250\./.test(a.address)));
      assert.ok(n.status.conditions.some((c) => c.type === 'Ready' && c.status === 'True'));
    }
    // Each node renews its Lease as a kubelet does (every 10 s), owned by its Node throughout.
    type Lease = { metadata: { name: string; ownerReferences?: { kind: string; name: string }[] }; spec: { holderIdentity: string; renewTime: string } };
    const leases = () => (JSON.parse(kubectlOk(['get', 'leases', '-n', 'kube-node-lease', '-o', 'json'])) as { items: Lease[] }).items;
    const first = leases();
    await new Promise((r) => setTimeout(r, 11_000));
    const later = leases();
    for (const name of ['node-1', 'node-2']) {
      const was = first.find((x) => x.metadata.name === name);
      const l = later.find((x) => x.metadata.name === name);
      assert.ok(was && l, `Lease kube-node-lease/${name}${hint()}`);
      assert.equal(l.spec.holderIdentity, name);
      assert.ok(Date.parse(l.spec.renewTime) > Date.parse(was.spec.renewTime), `renewed: ${was.spec.renewTime} -> ${l.spec.renewTime}`);
      assert.deepEqual(l.metadata.ownerReferences?.map((o) => `${o.kind}/${o.name}`), [`Node/${name}`]);
    }
    // With the mesh on, its CRDs are installed (policies can be applied with kubectl).
    kubectlOk(['get', 'authorizationpolicies.security.istio.io', '-A']);
  });

  it('runs kubectl-created pods: Running/Ready with IPs, an EndpointSlice of the ready pods', async () => {
    kubectlOk(['create', 'namespace', 'r3k']);
    kubectlOk(['apply', '-f', '-'], APP);
    const all = await eventually('3 ready pods', () => { const p = pods(); return p.length === 3 && p.every(isReady) ? p : undefined; }, 90_000);
    for (const p of all) {
      assert.ok(p.spec.nodeName === 'node-1' || p.spec.nodeName === 'node-2', `${p.metadata.name} bound to a node`);
      assert.match(p.status!.podIP!, /^10\.244\./);
      assert.match(p.status!.hostIP!, /^10\.250\./);
    }
    const echoIps = all.filter((p) => p.metadata.name.startsWith('echo-')).map((p) => p.status!.podIP!).sort();
    await eventually('an EndpointSlice listing both echo pods', () => {
      const slices = (JSON.parse(kubectlOk(['get', 'endpointslices', '-n', 'r3k', '-l', 'kubernetes.io/service-name=echo', '-o', 'json'])) as { items: { endpoints?: { addresses: string[]; conditions?: { ready?: boolean } }[] }[] }).items;
      const ready = slices.flatMap((s) => (s.endpoints ?? []).filter((e) => e.conditions?.ready).flatMap((e) => e.addresses)).sort();
      return JSON.stringify(ready) === JSON.stringify(echoIps) ? true : undefined;
    }, 30_000);
  });

  it('the client reaches both echo pods through the Service VIP; ambit local get/exec/logs work', async () => {
    const vip = kubectlOk(['get', 'svc', '-n', 'r3k', 'echo', '-o', 'jsonpath={.spec.clusterIP}']).trim();
    const echo = pods('app=echo').map((p) => p.metadata.name).sort();
    const seen = new Set<string>();
    const deadline = Date.now() + 20_000;
    let last = '';
    while (seen.size < echo.length && Date.now() < deadline) {
      const r = ambit(['exec', 'r3k/client', '--', 'node', HTTP_GET, `http://${vip}/`]);
      last = r.stdout + r.stderr;
      try { seen.add((JSON.parse(r.stdout) as { pod: string }).pod); } catch { await new Promise((res) => setTimeout(res, 300)); }
    }
    assert.deepEqual([...seen].sort(), echo, `last answer: ${last}${hint()}`);
    const got = ambit(['get', 'pods', '-n', 'r3k']);
    assert.equal(got.code, 0, got.stderr);
    assert.match(got.stdout, /client\s+1\/1\s+Running/);
    const deps = ambit(['get', 'deployments', '-n', 'r3k']);
    assert.match(deps.stdout, /echo\s+2\/2/);
    const logs = ambit(['logs', `r3k/${echo[0]}`]);
    assert.match(logs.stdout, /listening on :8080/);
  });

  it('a pod deleted with kubectl stops; the Deployment replaces it', async () => {
    const [victim] = pods('app=echo');
    kubectlOk(['delete', 'pod', '-n', 'r3k', victim.metadata.name, '--wait=true', '--timeout=60s']);
    const logFile = `${STATE}/logs/pods/r3k_${victim.metadata.name}_echo.log`;
    assert.ok(existsSync(logFile));
    const after = await eventually('two ready echo pods again', () => {
      const p = pods('app=echo');
      return p.length === 2 && p.every(isReady) && !p.some((x) => x.metadata.uid === victim.metadata.uid) ? p : undefined;
    }, 60_000);
    assert.ok(!after.some((p) => p.metadata.name === victim.metadata.name));
    // Its sandbox (netns) is gone.
    const netnsList = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
    const records = spawnSync('ls', [`${STATE}/pods`], { encoding: 'utf8' }).stdout;
    assert.doesNotMatch(records, new RegExp(victim.metadata.uid), 'sandbox record removed');
    assert.match(netnsList, new RegExp(`${INSTANCE}-p-`), 'other pods keep theirs');
    assert.match(readFileSync(logFile, 'utf8'), /listening/);
  });

  it('ambit local apply and delete go through the API server', () => {
    const manifest = `
apiVersion: v1
kind: Pod
metadata: {name: extra, namespace: r3k}
spec:
  containers:
  - {name: e, image: ambit/echo, ports: [{containerPort: 8080}]}
`;
    const a = ambit(['apply', '-f', '-'], manifest);
    assert.equal(a.code, 0, a.stdout + a.stderr + hint());
    assert.match(a.stdout, /pod\/extra \(r3k\) created/);
    assert.ok(isReady(JSON.parse(kubectlOk(['get', 'pod', '-n', 'r3k', 'extra', '-o', 'json'])) as PodJson));
    const again = ambit(['apply', '-f', '-'], manifest);
    assert.match(again.stdout, /pod\/extra \(r3k\) unchanged/);
    const d = ambit(['delete', '-f', '-'], manifest);
    assert.equal(d.code, 0, d.stdout + d.stderr);
    assert.equal(kubectl(['get', 'pod', '-n', 'r3k', 'extra']).code, 1);
  });

  it('down leaves no process, netns or state', () => {
    const d = ambit(['down']);
    assert.equal(d.code, 0, d.stdout + d.stderr);
    assert.equal(existsSync(STATE), false);
    assert.deepEqual(pidsMentioning(STATE + '/'), []);
    const netns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
    assert.doesNotMatch(netns, new RegExp(`${INSTANCE}-`));
  });
});
