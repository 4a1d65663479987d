import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/cli/controller.ts';
import type { KubeObject } from '../../src/api/k8s.ts';
import { loadKubeConfig } from '../../src/controller/sources/kube/client.ts';
import { backoffMs, objectPath, WATCHED } from '../../src/controller/sources/kube/resources.ts';
import { acceptedCondition } from '../../src/controller/sources/kube/status.ts';
import { isAmbitError } from '../../src/shared/errors.ts';

const policy = (spec: unknown): KubeObject => ({
  apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy',
  metadata: { name: 'p', namespace: 'demo', generation: 3, uid: 'u1' }, spec,
});

test('Accepted condition: accepted, accepted with warnings, refused naming the field', () => {
  const ok = acceptedCondition(policy({ action: 'ALLOW', rules: [{ from: [{ source: { namespaces: ['demo'] } }] }] }), {});
  assert.deepEqual(ok, { type: 'Accepted', status: 'True', reason: 'Accepted', message: 'accepted', observedGeneration: 3 });
  const warn = acceptedCondition(policy({ action: 'ALLOW', rules: [{ to: [{ operation: { methods: ['GET'] } }] }] }), {});
  assert.equal(warn.status, 'True');
  assert.equal(warn.reason, 'UnsupportedValue');
  assert.match(warn.message, /not enforced as written: .*methods/);
  const bad = acceptedCondition(policy({ action: 'ALLOW', rules: [{ to: [{ operation: { ports: ['http'] } }] }] }), {});
  assert.equal(bad.status, 'False');
  assert.equal(bad.reason, 'Invalid');
  assert.match(bad.message, /^spec\.rules\[0\]\.to\[0\]\.operation\.ports/);
});

test('backoff doubles, is capped, has jitter within 20%', () => {
  for (let i = 0; i < 50; i++) {
    const b0 = backoffMs(0, 250, 10_000);
    assert.ok(b0 >= 200 && b0 <= 300, String(b0));
    const b3 = backoffMs(3, 250, 10_000);
    assert.ok(b3 >= 1600 && b3 <= 2400, String(b3));
    const big = backoffMs(100, 250, 10_000);
    assert.ok(big >= 8000 && big <= 12_000, String(big));
  }
});

test('watched resources and object paths', () => {
  assert.deepEqual(WATCHED.map((r) => r.kind), ['Namespace', 'Pod', 'Service', 'ServiceAccount', 'EndpointSlice', 'AuthorizationPolicy', 'PeerAuthentication']);
  const ap = WATCHED.find((r) => r.kind === 'AuthorizationPolicy')!;
  assert.equal(objectPath(ap, 'demo', 'allow'), '/apis/security.istio.io/v1/namespaces/demo/authorizationpolicies/allow');
  assert.equal(WATCHED.filter((r) => r.optional).length, 2);
});

test('kubeconfig problems are AmbitErrors naming the file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ambit-kc-'));
  try {
    assert.throws(() => loadKubeConfig({ kubeconfig: join(dir, 'missing') }), (e) => isAmbitError(e, 'CONTROLLER_KUBECONFIG') && /missing/.test(e.message));
    writeFileSync(join(dir, 'empty'), 'apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n');
    assert.throws(() => loadKubeConfig({ kubeconfig: join(dir, 'empty') }), (e) => isAmbitError(e, 'CONTROLLER_KUBECONFIG') && /current-context/.test(e.message));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('controller CLI: one source only', async () => {
  const write = process.stderr.write.bind(process.stderr);
  let err = '';
  process.stderr.write = ((chunk: string) => { err += chunk; return true; }) as typeof process.stderr.write;
  try {
    assert.equal(await run(['--manifests', '/tmp/x', '--kubeconfig', '/tmp/k', '--ca-dir', '/tmp/y', '--listen', '127.0.0.1:0']), 2);
    assert.match(err, /--manifests and --kubeconfig exclude each other/);
    err = '';
    assert.equal(await run(['--ca-dir', '/tmp/y', '--listen', '127.0.0.1:0']), 2);
    assert.match(err, /missing --manifests \(or --kubernetes \/ --kubeconfig\)/);
  } finally {
    process.stderr.write = write;
  }
});
