/**
 * Policies end to end over the real control plane (gRPC/mTLS on 127.0.0.1): AuthorizationPolicy and
 * PeerAuthentication manifests in the controller's directory reach an agent's StateStore; edits
 * and deletions flow as deltas; an invalid edit keeps the previous version in force everywhere.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rename, rm, unlink, writeFile as writeFileRaw } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Controller } from '../../src/controller/controller.ts';
import type { PushEvent } from '../../src/controller/push/agent-session.ts';
import { AUTHORIZATION_TYPE, PEER_AUTHENTICATION_TYPE } from '../../src/controller/push/wire.ts';
import { ConfigClient } from '../../src/ztunnel/config/config-client.ts';
import { StateStore } from '../../src/ztunnel/state/store.ts';
import { setLogLevel } from '../../src/shared/log.ts';

setLogLevel((process.env.AMBIT_LOG_LEVEL as 'debug') ?? 'error');

let dir = '';
let manifests = '';
let controller: Controller | undefined;
let client: ConfigClient | undefined;
const store = new StateStore();

async function writeFile(path: string, text: string): Promise<void> {
  const tmp = join(path, '..', `.${path.split('/').pop()}.tmp`);
  await writeFileRaw(tmp, text);
  await rename(tmp, path);
}

async function waitFor(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const POD = `apiVersion: v1
kind: Pod
metadata:
  name: echo-5d8f7c9b4-abcde
  namespace: demo
  uid: uid-echo
  labels: { app: echo, pod-template-hash: 5d8f7c9b4 }
  ownerReferences: [{ apiVersion: apps/v1, kind: ReplicaSet, name: echo-5d8f7c9b4, uid: rs1, controller: true }]
spec: { nodeName: n1, serviceAccountName: echo, containers: [{ name: app }] }
status: { phase: Running, podIP: 10.1.0.1 }
`;
const DENY_FOO = (ns = 'foo') => `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-foo, namespace: demo }
spec:
  action: DENY
  rules: [{ from: [{ source: { namespaces: ["${ns}"] } }] }]
`;
const ALLOW_SLEEP = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-sleep, namespace: demo }
spec:
  selector: { matchLabels: { app: echo } }
  rules:
  - from: [{ source: { principals: ["cluster.local/ns/demo/sa/sleep"] } }]
    to: [{ operation: { ports: ["8080"], methods: ["GET"] } }]
  - from: [{ source: { ipBlocks: ["10.1.0.0/16"] } }]
    to: [{ operation: { ports: ["8080"] } }]
`;
const MESH_STRICT = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: istio-system, creationTimestamp: "2026-01-01T00:00:00Z" }
spec: { mtls: { mode: STRICT } }
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: echo-ports, namespace: demo }
spec:
  selector: { matchLabels: { app: echo } }
  portLevelMtls: { "8080": { mode: PERMISSIVE } }
`;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ambit-pp-'));
  manifests = join(dir, 'manifests');
  await mkdir(manifests);
  await writeFile(join(manifests, 'pod.yaml'), POD);
  await writeFile(join(manifests, 'deny.yaml'), DENY_FOO());
  await writeFile(join(manifests, 'allow.yaml'), ALLOW_SLEEP);
  await writeFile(join(manifests, 'peer.yaml'), MESH_STRICT);
  controller = await Controller.start({ manifests, caDir: join(dir, 'ca'), host: '127.0.0.1', port: 0 });
  const creds = await controller.ca.issueAgentCredentials('n1');
  client = new ConfigClient({ address: `127.0.0.1:${controller.port}`, node: 'n1', ...creds, store });
  client.start();
  await client.waitSynced(5000);
});

after(async () => {
  await client?.stop();
  await controller?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('policies and the workload name arrive in the agent store with the first sync', () => {
  assert.equal(store.workloadByUid('uid-echo')?.workloadName, 'echo');
  const authz = store.authorizations();
  assert.deepEqual(authz.map((a) => `${a.namespace}/${a.name}`), ['demo/allow-sleep', 'demo/deny-foo']);
  const [allow, deny] = authz;
  assert.equal(deny.action, 'DENY');
  assert.equal(deny.scope, 'NAMESPACE');
  assert.deepEqual(deny.rules[0].clauses[0][0].namespaces, ['foo']);
  assert.equal(allow.scope, 'WORKLOAD');
  assert.deepEqual(allow.selector, { app: 'echo' });
  assert.equal(allow.rules.length, 1, 'the rule that needs L7 (methods) was dropped');
  assert.deepEqual(allow.rules[0].clauses.map((c) => c.map((m) => [m.sourceIps, m.destinationPorts])), [[[['10.1.0.0/16'], []]], [[[], [8080]]]]);
  assert.match(allow.warnings[0], /methods/);
  assert.deepEqual(controller!.config!.warnings.map((w) => w.object), ['AuthorizationPolicy demo/allow-sleep']);

  const peers = store.peerAuthentications();
  assert.deepEqual(peers.map((p) => [p.namespace, p.name, p.scope, p.mode, p.portLevel, p.createdAt]), [
    ['demo', 'echo-ports', 'WORKLOAD', 'UNSET', { 8080: 'PERMISSIVE' }, undefined],
    ['istio-system', 'default', 'MESH', 'STRICT', {}, '2026-01-01T00:00:00Z'],
  ]);
});

test('an edit, an invalid edit (previous kept), a fix and a delete, each within a second', async () => {
  const events: PushEvent[] = [];
  const off = controller!.push.onEvent((e) => events.push(e));
  try {
    const gen = store.policyGeneration;
    await writeFile(join(manifests, 'deny.yaml'), DENY_FOO('bar'));
    await waitFor('the edit', () => store.authorizations().find((a) => a.name === 'deny-foo')?.rules[0].clauses[0][0].namespaces[0] === 'bar', 1000);
    assert.ok(store.policyGeneration > gen);
    const sent = events.filter((e) => e.kind === 'response') as Extract<PushEvent, { kind: 'response' }>[];
    assert.deepEqual(sent.map((e) => [e.typeUrl, e.resources, e.removed]), [[AUTHORIZATION_TYPE, ['demo/deny-foo'], []]], 'only the changed policy is sent');

    // Invalid: a CIDR that is not one. The controller reports the field and keeps pushing the old version.
    events.length = 0;
    await writeFile(join(manifests, 'deny.yaml'), DENY_FOO('bar').replace('namespaces: ["bar"]', 'namespaces: ["bar"], ipBlocks: ["10.0.0.0/99"]'));
    await waitFor('the problem', () => (controller!.config?.problems ?? []).some((p) => p.object === 'AuthorizationPolicy demo/deny-foo'), 3000);
    const problem = controller!.config!.problems.find((p) => p.object === 'AuthorizationPolicy demo/deny-foo')!;
    assert.equal(problem.field, 'spec.rules[0].from[0].source.ipBlocks[0]');
    assert.ok(controller!.config!.authorizations.some((a) => a.name === 'deny-foo'), 'still in the controller config');
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(events.filter((e) => e.kind === 'response'), [], 'nothing changes for the agent');
    assert.deepEqual(store.authorizations().find((a) => a.name === 'deny-foo')?.rules[0].clauses[0][0].namespaces, ['bar']);

    // DISABLE is refused the same way; the previous STRICT stays.
    await writeFile(join(manifests, 'peer.yaml'), MESH_STRICT.replace('mode: STRICT', 'mode: DISABLE'));
    await waitFor('the DISABLE problem', () => (controller!.config?.problems ?? []).some((p) => p.field === 'spec.mtls.mode'), 3000);
    assert.equal(store.peerAuthentications().find((p) => p.name === 'default')?.mode, 'STRICT');

    // Fixed, then deleted.
    await writeFile(join(manifests, 'deny.yaml'), DENY_FOO('baz'));
    await waitFor('the fix', () => store.authorizations().find((a) => a.name === 'deny-foo')?.rules[0].clauses[0][0].namespaces[0] === 'baz', 1000);
    await unlink(join(manifests, 'deny.yaml'));
    await unlink(join(manifests, 'peer.yaml'));
    await waitFor('the deletes', () => store.authorizations().length === 1 && store.peerAuthentications().length === 0, 1000);
    const removed = (events.filter((e) => e.kind === 'response') as Extract<PushEvent, { kind: 'response' }>[]).flatMap((e) => e.removed.map((r) => `${e.typeUrl === PEER_AUTHENTICATION_TYPE ? 'pa' : 'ap'}:${r}`));
    assert.deepEqual(removed.sort(), ['ap:demo/deny-foo', 'pa:demo/echo-ports', 'pa:istio-system/default']);
    assert.equal(events.filter((e) => e.kind === 'nack').length, 0, 'the agent accepted every record');
  } finally {
    off();
  }
});

test('controller restart: the agent keeps its policies and is sent only the policy that changed meanwhile', async () => {
  const port = controller!.port;
  await controller!.stop();
  controller = undefined;
  await waitFor('the agent notices', () => !client!.connected, 3000);
  assert.equal(store.authorizations().length, 1, 'last good policies kept while the controller is away');
  await writeFile(join(manifests, 'deny.yaml'), DENY_FOO('qux'));
  const c = await Controller.start({ manifests, caDir: join(dir, 'ca'), host: '127.0.0.1', port });
  controller = c;
  const events: PushEvent[] = [];
  c.push.onEvent((e) => events.push(e));
  await waitFor('resynced', () => store.authorizations().some((a) => a.name === 'deny-foo'), 8000);
  await client!.waitSynced(2000);
  const authz = events.filter((e) => e.kind === 'response' && e.typeUrl === AUTHORIZATION_TYPE) as Extract<PushEvent, { kind: 'response' }>[];
  assert.deepEqual(authz.map((e) => [e.resources, e.removed]), [[['demo/deny-foo'], []]], 'allow-sleep not re-sent');
});
