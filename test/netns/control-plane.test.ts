/**
 * Control plane end to end over real gRPC/mTLS on 127.0.0.1: controller on a temp manifest dir with
 * a real CA, two ConfigClients (nodes n1, n2) with real StateStores.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rename, rm, writeFile as writeFileRaw, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { Controller } from '../../src/controller/controller.ts';
import { CertificateAuthority } from '../../src/controller/ca/ca.ts';
import type { PushEvent } from '../../src/controller/push/agent-session.ts';
import { SERVICE_TYPE, WORKLOAD_TYPE } from '../../src/controller/push/wire.ts';
import { podPlacements } from '../../src/controller/translate/placements.ts';
import { ConfigClient } from '../../src/ztunnel/config/config-client.ts';
import { StateStore } from '../../src/ztunnel/state/store.ts';
import { createCsr } from '../../src/ztunnel/identity/csr.ts';
import { isAmbitError } from '../../src/shared/errors.ts';
import { setLogLevel } from '../../src/shared/log.ts';

setLogLevel((process.env.AMBIT_LOG_LEVEL as 'debug') ?? 'warn');

let dir = '';
let manifests = '';
let caDir = '';
let controller: Controller | undefined;
let port = 0;
const clients: ConfigClient[] = [];
const stores: Record<string, StateStore> = {};
const cl: Record<string, ConfigClient> = {};

const NS = `apiVersion: v1
kind: Namespace
metadata: { name: demo, labels: { istio.io/dataplane-mode: ambient } }
`;
function podYaml(name: string, o: { node: string; sa: string; ip: string; app?: string; extra?: string }): string {
  return `apiVersion: v1
kind: Pod
metadata:
  name: ${name}
  namespace: demo
  uid: uid-${name}
  labels: { app: ${o.app ?? name}${o.extra ? `, ${o.extra}` : ''} }
spec:
  nodeName: ${o.node}
  serviceAccountName: ${o.sa}
  containers: [{ name: app, ports: [{ name: http, containerPort: 8080 }] }]
status:
  phase: Running
  podIP: ${o.ip}
  conditions: [{ type: Ready, status: "True" }]
`;
}
const SVC = (port = 80) => `apiVersion: v1
kind: Service
metadata: { name: echo, namespace: demo }
spec:
  clusterIP: 10.96.0.10
  selector: { app: echo }
  ports: [{ name: web, port: ${port}, targetPort: http }]
`;

/** Atomic write (as the object store does), so the watcher never sees a half-written file. */
async function writeFile(path: string, text: string): Promise<void> {
  const tmp = join(path, '..', `.${path.split('/').pop()}.tmp`);
  await writeFileRaw(tmp, text);
  await rename(tmp, path);
}

async function waitFor(what: string, cond: () => boolean, timeoutMs: number): Promise<number> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return Date.now() - start;
}

function record(c: Controller): PushEvent[] {
  const events: PushEvent[] = [];
  c.push.onEvent((e) => events.push(e));
  return events;
}

async function startController(p = 0): Promise<Controller> {
  const c = await Controller.start({ manifests, caDir, host: '127.0.0.1', port: p, source: undefined });
  controller = c;
  return c;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ambit-cp-'));
  manifests = join(dir, 'manifests');
  caDir = join(dir, 'ca');
  const { mkdir } = await import('node:fs/promises');
  await mkdir(manifests);
  await writeFile(join(manifests, 'ns.yaml'), NS);
  await writeFile(join(manifests, 'pod-a.yaml'), podYaml('a', { node: 'n1', sa: 'sa-a', ip: '10.1.0.1', app: 'echo' }));
  await writeFile(join(manifests, 'pod-b.yaml'), podYaml('b', { node: 'n2', sa: 'sa-b', ip: '10.1.0.2', app: 'echo' }));
  await writeFile(join(manifests, 'svc.yaml'), SVC());
  const c = await startController();
  port = c.port;
  for (const node of ['n1', 'n2']) {
    const creds = await c.ca.issueAgentCredentials(node);
    const store = new StateStore();
    const client = new ConfigClient({ address: `127.0.0.1:${port}`, node, ...creds, store });
    client.start();
    clients.push(client);
    stores[node] = store;
    cl[node] = client;
  }
  await Promise.all(clients.map((x) => x.waitSynced(5000)));
});

after(async () => {
  await Promise.allSettled(clients.map((c) => c.stop()));
  await controller?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('both agents receive every workload and service', () => {
  for (const node of ['n1', 'n2']) {
    const s = stores[node];
    assert.deepEqual(s.workloads().map((w) => w.uid).sort(), ['uid-a', 'uid-b'], `node ${node}`);
    assert.equal(s.workloadByAddress('10.1.0.2')?.node, 'n2');
    assert.equal(s.workloadByAddress('10.1.0.1')?.protocol, 'HBONE');
    const hit = s.serviceByAddress('10.96.0.10', 80);
    assert.equal(hit?.service.name, 'echo');
    assert.deepEqual(hit?.service.endpoints.map((e) => [e.address, e.ports[80]]).sort(), [['10.1.0.1', 8080], ['10.1.0.2', 8080]]);
    assert.equal(cl[node].connected, true);
  }
  assert.deepEqual(controller!.push.agents().map((a) => a.node).sort(), ['n1', 'n2']);
});

test('an edit sends only the delta, applied within a second', async () => {
  const events = record(controller!);
  const start = Date.now();
  await writeFile(join(manifests, 'pod-a.yaml'), podYaml('a', { node: 'n1', sa: 'sa-a', ip: '10.1.0.1', app: 'echo', extra: 'tier: gold' }));
  for (const node of ['n1', 'n2']) {
    await waitFor(`${node} sees the new label`, () => stores[node].workloadByUid('uid-a')?.labels.tier === 'gold', 1000);
  }
  assert.ok(Date.now() - start < 1000);
  await waitFor('acks', () => events.filter((e) => e.kind === 'ack').length >= 2, 1000);
  const responses = events.filter((e) => e.kind === 'response');
  for (const node of ['n1', 'n2']) {
    const mine = responses.filter((e) => e.node === node) as Extract<PushEvent, { kind: 'response' }>[];
    assert.deepEqual(mine.map((e) => [e.typeUrl, e.resources, e.removed]), [[WORKLOAD_TYPE, ['uid-a'], []]], `node ${node} got exactly one changed workload`);
  }
  assert.equal(stores.n1.workloadByUid('uid-b')?.name, 'b', 'untouched records still there');
});

test('a bad YAML file is reported; the previous state stays and other edits still flow', async () => {
  const events = record(controller!);
  await writeFile(join(manifests, 'broken.yaml'), 'apiVersion: v1\nkind: Pod\nmetadata: { name: [oops\n');
  await waitFor('error reported in the snapshot', () => (controller!.snapshot?.errors ?? []).some((e) => e.source.endsWith('broken.yaml')), 3000);
  assert.equal(events.filter((e) => e.kind === 'response').length, 0, 'nothing changed for agents');
  assert.equal(stores.n1.workloads().length, 2);
  // Also an invalid object: a Service with a port out of range -> a translate problem; the rest flows.
  await writeFile(join(manifests, 'svc-bad.yaml'), `apiVersion: v1\nkind: Service\nmetadata: { name: bad, namespace: demo }\nspec: { ports: [{ port: 99999 }] }\n`);
  await writeFile(join(manifests, 'svc.yaml'), SVC(81));
  for (const node of ['n1', 'n2']) {
    await waitFor(`${node} sees port 81`, () => stores[node].serviceByAddress('10.96.0.10', 81) !== undefined, 1000);
    assert.equal(stores[node].serviceByAddress('10.96.0.10', 80), undefined);
    assert.equal(stores[node].service('demo/bad'), undefined);
  }
  const problems = controller!.config?.problems ?? [];
  assert.deepEqual(problems.map((p) => [p.object, p.field]), [['Service demo/bad', 'spec.ports[0].port']]);
  const svcResponses = events.filter((e) => e.kind === 'response' && e.typeUrl === SERVICE_TYPE && e.node === 'n1') as Extract<PushEvent, { kind: 'response' }>[];
  assert.deepEqual(svcResponses.map((e) => e.resources), [['demo/echo']]);
  await unlink(join(manifests, 'broken.yaml'));
  await unlink(join(manifests, 'svc-bad.yaml'));
});

test('a record the agent refuses is NACKed; the agent keeps its previous record; not re-sent until it changes', async () => {
  const c = controller!;
  const events = record(c);
  const good = c.config!;
  const placements = podPlacements(c.snapshot!.objects);
  const a = good.workloads.find((w) => w.uid === 'uid-a')!;
  const badA = { ...a, addresses: ['10.1.0.1', '999.0.0.1'] };
  const newW = { ...a, uid: 'uid-new', name: 'new', addresses: ['10.1.0.50'], services: {} };
  c.push.update({ workloads: [...good.workloads.filter((w) => w !== a), badA, newW], services: good.services }, placements);
  await waitFor('nacks from both agents', () => events.filter((e) => e.kind === 'nack').length === 2, 2000);
  const nack = events.find((e) => e.kind === 'nack' && e.node === 'n1') as Extract<PushEvent, { kind: 'nack' }>;
  assert.deepEqual(nack.rejected, ['uid-a']);
  assert.match(nack.error, /999\.0\.0\.1/);
  for (const node of ['n1', 'n2']) {
    assert.deepEqual(stores[node].workloadByUid('uid-a')?.addresses, ['10.1.0.1'], 'previous record kept');
    assert.equal(stores[node].workloadByUid('uid-new')?.name, 'new', 'the good part of the response applied');
  }
  // Same bad version again (with another change): not re-sent.
  events.length = 0;
  const newW2 = { ...newW, ready: false };
  c.push.update({ workloads: [...good.workloads.filter((w) => w !== a), badA, newW2], services: good.services }, placements);
  await waitFor('acks', () => events.filter((e) => e.kind === 'ack').length === 2, 2000);
  const sent = events.filter((e) => e.kind === 'response' && e.node === 'n1') as Extract<PushEvent, { kind: 'response' }>[];
  assert.deepEqual(sent.map((e) => e.resources), [['uid-new']]);
  // Back to the real config: uid-new removed, uid-a not re-sent (the agent still has that version).
  events.length = 0;
  c.push.update(good, placements);
  await waitFor('acks', () => events.filter((e) => e.kind === 'ack').length === 2, 2000);
  const back = events.filter((e) => e.kind === 'response' && e.node === 'n1') as Extract<PushEvent, { kind: 'response' }>[];
  assert.deepEqual(back.map((e) => [e.resources, e.removed]), [[[], ['uid-new']]]);
  assert.equal(stores.n2.workloadByUid('uid-new'), undefined);
});

async function csrFor(ns: string, sa: string): Promise<string> {
  return (await createCsr(`spiffe://cluster.local/ns/${ns}/sa/${sa}`)).csrPem;
}

test('CreateCertificate: only for identities with a pod on the caller node', async () => {
  const ok = await cl.n1.signCsr(await csrFor('demo', 'sa-a'), 3600);
  const leaf = new X509Certificate(ok.certChainPem);
  assert.match(leaf.subjectAltName ?? '', /URI:spiffe:\/\/cluster\.local\/ns\/demo\/sa\/sa-a/);
  assert.ok(leaf.verify(controller!.ca.caCert.publicKey), 'signed by the mesh CA');
  assert.equal(ok.rootsPem.trim(), controller!.ca.rootCertPem.trim());

  await assert.rejects(cl.n1.signCsr(await csrFor('demo', 'sa-b'), 3600), (err: unknown) => {
    assert.ok(isAmbitError(err, 'ZT_CSR_DENIED'), String(err));
    assert.match(err.message, /node n1/);
    assert.match(err.message, /spiffe:\/\/cluster\.local\/ns\/demo\/sa\/sa-b/);
    assert.match(err.message, /n2/);
    assert.equal(err.details?.grpcCode, 7);
    return true;
  });
  await assert.rejects(cl.n1.signCsr(await csrFor('demo', 'nobody'), 3600), (err: unknown) => {
    assert.ok(isAmbitError(err, 'ZT_CSR_DENIED'), String(err));
    assert.match(err.message, /service account nobody/);
    return true;
  });
  // n2 can have sa-b.
  await cl.n2.signCsr(await csrFor('demo', 'sa-b'), 3600);
});

test('a client certificate from another CA is refused', async () => {
  const otherDir = await mkdtemp(join(tmpdir(), 'ambit-cp-other-'));
  const client = (() => { let c: ConfigClient | undefined; return { set: (x: ConfigClient) => (c = x), get: () => c }; })();
  try {
    const other = await CertificateAuthority.loadOrCreate(otherDir);
    const foreign = await other.issueAgentCredentials('n1');
    const store = new StateStore();
    // Trusts the real server, but presents a certificate the controller does not trust.
    client.set(new ConfigClient({ address: `127.0.0.1:${port}`, node: 'n1', certPem: foreign.certPem, keyPem: foreign.keyPem, rootsPem: controller!.ca.rootCertPem, store }));
    client.get()!.start();
    await assert.rejects(client.get()!.waitSynced(1500), (e: unknown) => isAmbitError(e, 'ZT_CONTROLLER_UNAVAILABLE'));
    await assert.rejects(client.get()!.signCsr(await csrFor('demo', 'sa-a'), 3600), (e: unknown) => isAmbitError(e, 'ZT_CONTROLLER_UNAVAILABLE'));
    assert.equal(store.workloads().length, 0);
    assert.equal(controller!.push.agents().length, 2);
  } finally {
    await client.get()?.stop();
    await rm(otherDir, { recursive: true, force: true });
  }
});

test('controller away: agents keep state; back on the same port: resync with changes, deletions included', async () => {
  const before = stores.n1.workloads().length;
  await controller!.stop();
  controller = undefined;
  await waitFor('clients notice', () => !cl.n1.connected && !cl.n2.connected, 3000);
  assert.equal(stores.n1.workloads().length, before, 'last good state kept');
  assert.equal(stores.n2.serviceByAddress('10.96.0.10', 81)?.service.name, 'echo');

  // Changes while away: b deleted, c added.
  await unlink(join(manifests, 'pod-b.yaml'));
  await writeFile(join(manifests, 'pod-c.yaml'), podYaml('c', { node: 'n2', sa: 'sa-c', ip: '10.1.0.3', app: 'other' }));
  await new Promise((r) => setTimeout(r, 300));

  const c = await startController(port);
  const events = record(c);
  for (const node of ['n1', 'n2']) {
    await waitFor(`${node} resynced`, () => {
      const s = stores[node];
      return s.workloadByUid('uid-c') !== undefined && s.workloadByUid('uid-b') === undefined
        && s.service('demo/echo')?.endpoints.length === 1;
    }, 8000);
    await cl[node].waitSynced(2000);
  }
  // Only differences were re-sent: c added, b removed, echo's endpoints changed; a not re-sent.
  const n1 = events.filter((e) => e.kind === 'response' && e.node === 'n1') as Extract<PushEvent, { kind: 'response' }>[];
  const w = n1.find((e) => e.typeUrl === WORKLOAD_TYPE)!;
  assert.deepEqual([w.resources, w.removed], [['uid-c'], ['uid-b']]);
  const s = n1.find((e) => e.typeUrl === SERVICE_TYPE)!;
  assert.deepEqual([s.resources, s.removed], [['demo/echo'], []]);
  assert.equal(stores.n1.workloadByAddress('10.1.0.2'), undefined);
});

test('`ambit controller` prints its ready line and stops on SIGTERM', async () => {
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, ['src/cli/main.ts', 'controller', '--manifests', manifests, '--ca-dir', caDir, '--listen', '127.0.0.1:0'],
    { cwd: new URL('../..', import.meta.url).pathname, stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    let out = '';
    child.stderr.on('data', (d) => (out += d));
    child.stdout.on('data', (d) => (out += d));
    await waitFor('ready line', () => /controller ready listen=127\.0\.0\.1:\d+/.test(out), 10_000).catch((e) => { throw new Error(`${e.message}\noutput:\n${out}`); });
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0, out);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});
