import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { KubeObject } from '../../src/api/k8s.ts';
import { translate } from '../../src/controller/translate/translate.ts';
import { checkPlacement, podPlacements } from '../../src/controller/translate/placements.ts';

function ns(name: string, labels: Record<string, string> = {}): KubeObject {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } };
}
function pod(name: string, o: { ns?: string; ip?: string; ips?: string[]; node?: string; sa?: string; labels?: Record<string, string>;
  phase?: string; ready?: boolean; ports?: { name?: string; containerPort: number }[] } = {}): KubeObject {
  const status: Record<string, unknown> = { phase: o.phase ?? 'Running' };
  if (o.ip !== undefined) status.podIP = o.ip;
  if (o.ips) status.podIPs = o.ips.map((ip) => ({ ip }));
  if (o.ready !== undefined) status.conditions = [{ type: 'Ready', status: o.ready ? 'True' : 'False' }];
  return {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name, namespace: o.ns ?? 'demo', uid: `uid-${name}`, labels: o.labels ?? {} },
    spec: { nodeName: o.node ?? 'n1', serviceAccountName: o.sa, containers: [{ name: 'c', ports: o.ports }] },
    status,
  };
}
function svc(name: string, spec: Record<string, unknown>, namespace = 'demo'): KubeObject {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace }, spec };
}

test('enrollment: namespace label, pod opt-out, pod opt-in in a plain namespace', () => {
  const r = translate({ objects: [
    ns('demo', { 'istio.io/dataplane-mode': 'ambient' }), ns('plain'),
    pod('a', { ip: '10.0.0.1' }),
    pod('b', { ip: '10.0.0.2', labels: { 'istio.io/dataplane-mode': 'none' } }),
    pod('c', { ns: 'plain', ip: '10.0.0.3' }),
    pod('d', { ns: 'plain', ip: '10.0.0.4', labels: { 'istio.io/dataplane-mode': 'ambient' } }),
    pod('e', { ns: 'nowhere', ip: '10.0.0.5' }),
  ] });
  const proto = Object.fromEntries(r.workloads.map((w) => [w.name, w.protocol]));
  assert.deepEqual(proto, { a: 'HBONE', b: 'TCP', c: 'TCP', d: 'HBONE', e: 'TCP' });
  assert.deepEqual(r.problems, []);
});

test('workload fields: node, service account default, trust domain, canonical names, addresses', () => {
  const r = translate({ objects: [
    ns('demo', { 'istio.io/dataplane-mode': 'ambient' }),
    pod('a', { ip: '10.0.0.1', ips: ['10.0.0.1', 'fd00::1'], node: 'n2', labels: { app: 'echo', version: 'v2' } }),
    pod('b', { ip: '10.0.0.2', sa: 'sa-b', labels: { 'app.kubernetes.io/name': 'kname', app: 'x', 'service.istio.io/canonical-revision': 'r9' } }),
    pod('c', { ip: '10.0.0.3', labels: { 'service.istio.io/canonical-name': 'canon', app: 'x' } }),
  ] }, { trustDomain: 'example.org' });
  const [a, b, c] = r.workloads;
  assert.equal(a.uid, 'uid-a');
  assert.deepEqual(a.addresses, ['10.0.0.1', 'fd00::1']);
  assert.equal(a.node, 'n2');
  assert.equal(a.serviceAccount, 'default');
  assert.equal(a.trustDomain, 'example.org');
  assert.equal(a.canonicalName, 'echo');
  assert.equal(a.canonicalRevision, 'v2');
  assert.equal(b.serviceAccount, 'sa-b');
  assert.equal(b.canonicalName, 'kname');
  assert.equal(b.canonicalRevision, 'r9');
  assert.equal(c.canonicalName, 'canon');
  assert.equal(c.canonicalRevision, 'latest');
  const d = translate({ objects: [pod('plainpod', { ip: '10.0.0.9' })] }).workloads[0];
  assert.equal(d.canonicalName, 'plainpod');
  assert.equal(d.trustDomain, 'cluster.local');
});

test('pods without an IP or terminated are not workloads; readiness from condition or phase', () => {
  const p = pod('x', { ip: '10.0.0.7' });
  delete (p.status as Record<string, unknown>).conditions;
  const r = translate({ objects: [
    pod('noip'),
    pod('done', { ip: '10.0.0.1', phase: 'Succeeded' }),
    pod('failed', { ip: '10.0.0.2', phase: 'Failed' }),
    pod('notready', { ip: '10.0.0.3', ready: false }),
    pod('ready', { ip: '10.0.0.4', ready: true }),
    pod('pending', { ip: '10.0.0.5', phase: 'Pending' }),
    p,
  ] });
  const ready = Object.fromEntries(r.workloads.map((w) => [w.name, w.ready]));
  assert.deepEqual(ready, { notready: false, pending: false, ready: true, x: true });
});

test('service: VIPs, ports, endpoints by selector, named target ports, workload.services', () => {
  const r = translate({ objects: [
    pod('a1', { ip: '10.0.0.1', labels: { app: 'a' }, ports: [{ name: 'http', containerPort: 8080 }] }),
    pod('a2', { ip: '10.0.0.2', labels: { app: 'a' }, ports: [{ name: 'http', containerPort: 9090 }], ready: false }),
    pod('a3', { ip: '10.0.0.3', labels: { app: 'a' } }),               // lacks the named port
    pod('other', { ns: 'elsewhere', ip: '10.0.0.9', labels: { app: 'a' } }), // other namespace
    pod('b', { ip: '10.0.0.4', labels: { app: 'b' } }),
    svc('a', { selector: { app: 'a' }, clusterIP: '10.96.0.10', ports: [{ name: 'web', port: 80, targetPort: 'http' }, { name: 'raw', port: 81 }, { port: 82, targetPort: '8082' }] }),
  ] });
  assert.deepEqual(r.problems, []);
  const s = r.services[0];
  assert.equal(s.hostname, 'a.demo.svc.cluster.local');
  assert.deepEqual(s.vips, ['10.96.0.10']);
  assert.deepEqual(s.ports, [
    { name: 'web', port: 80, targetPort: 'http', protocol: 'TCP' },
    { name: 'raw', port: 81, targetPort: 81, protocol: 'TCP' },
    { port: 82, targetPort: 8082, protocol: 'TCP' },
  ]);
  assert.deepEqual(s.endpoints, [
    { workloadUid: 'uid-a1', address: '10.0.0.1', ports: { 80: 8080, 81: 81, 82: 8082 }, ready: true },
    { workloadUid: 'uid-a2', address: '10.0.0.2', ports: { 80: 9090, 81: 81, 82: 8082 }, ready: false },
    { workloadUid: 'uid-a3', address: '10.0.0.3', ports: { 81: 81, 82: 8082 }, ready: true },
  ]);
  const w = Object.fromEntries(r.workloads.map((x) => [x.name, x.services]));
  assert.deepEqual(w.a1, { 'demo/a': { 80: 8080, 81: 81, 82: 8082 } });
  assert.deepEqual(w.a3, { 'demo/a': { 81: 81, 82: 8082 } });
  assert.deepEqual(w.b, {});
  assert.deepEqual(w.other, {});
});

test('headless service has no VIPs; clusterIPs wins; no selector means no endpoints', () => {
  const r = translate({ objects: [
    pod('a', { ip: '10.0.0.1', labels: { app: 'a' } }),
    svc('headless', { clusterIP: 'None', selector: { app: 'a' }, ports: [{ port: 80 }] }),
    svc('dual', { clusterIP: '10.96.0.1', clusterIPs: ['10.96.0.1', 'fd00:96::1'], selector: { app: 'a' }, ports: [{ port: 80 }] }),
    svc('noselector', { clusterIP: '10.96.0.2', ports: [{ port: 80 }] }),
  ] });
  const by = Object.fromEntries(r.services.map((s) => [s.name, s]));
  assert.deepEqual(by.headless.vips, []);
  assert.equal(by.headless.endpoints.length, 1);
  assert.deepEqual(by.dual.vips, ['10.96.0.1', 'fd00:96::1']);
  assert.deepEqual(by.noselector.endpoints, []);
});

test('a bad Service (and a bad Pod) is reported with its field while the others translate', () => {
  const r = translate({ objects: [
    pod('a', { ip: '10.0.0.1', labels: { app: 'a' } }),
    pod('bad', { ip: 'not-an-ip' }),
    svc('good', { selector: { app: 'a' }, clusterIP: '10.96.0.1', ports: [{ port: 80 }] }),
    svc('badport', { selector: { app: 'a' }, clusterIP: '10.96.0.2', ports: [{ port: 70000 }] }),
    svc('badselector', { selector: { app: ['a'] }, clusterIP: '10.96.0.3', ports: [{ port: 80 }] }),
    svc('badtarget', { selector: { app: 'a' }, ports: [{ port: 80, targetPort: 'Not_A_Name' }] }),
    svc('badip', { clusterIP: '10.96.0.999', ports: [{ port: 80 }] }),
    svc('good', { clusterIP: '10.96.0.5' }), // duplicate
  ] });
  assert.deepEqual(r.services.map((s) => s.name), ['good']);
  assert.deepEqual(r.services[0].vips, ['10.96.0.1']);
  assert.deepEqual(r.workloads.map((w) => w.name), ['a']);
  assert.deepEqual(r.workloads[0].services, { 'demo/good': { 80: 80 } });
  const fields = Object.fromEntries(r.problems.map((p) => [p.object, p.field]));
  assert.deepEqual(fields, {
    'Pod demo/bad': 'status.podIP',
    'Service demo/badport': 'spec.ports[0].port',
    'Service demo/badselector': 'spec.selector',
    'Service demo/badtarget': 'spec.ports[0].targetPort',
    'Service demo/badip': 'spec.clusterIP',
    'Service demo/good': 'metadata.name',
  });
  const port = r.problems.find((p) => p.object === 'Service demo/badport')!;
  assert.match(port.message, /1\.\.65535.*70000/);
});

test('translation is deterministic (sorted output)', () => {
  const objs = [pod('b', { ip: '10.0.0.2' }), pod('a', { ip: '10.0.0.1' }), svc('z', { ports: [] }), svc('y', { ports: [] })];
  const r1 = translate({ objects: objs });
  const r2 = translate({ objects: [...objs].reverse() });
  assert.deepEqual(r1, r2);
  assert.deepEqual(r1.workloads.map((w) => w.name), ['a', 'b']);
});

test('placements: identities per node, with reasons for refusals', () => {
  const objs = [pod('a', { node: 'n1', sa: 'sa-a' }), pod('b', { node: 'n2', sa: 'sa-b', ip: '10.0.0.2' }), pod('c', { node: 'n1', sa: 'sa-c', phase: 'Succeeded' })];
  const p = podPlacements(objs);
  assert.deepEqual(checkPlacement(p, 'n1', 'demo', 'sa-a'), { ok: true });
  const other = checkPlacement(p, 'n1', 'demo', 'sa-b');
  assert.equal(other.ok, false);
  assert.match((other as { reason: string }).reason, /not placed|no pod.*node n1.*n2/);
  assert.equal(checkPlacement(p, 'n1', 'demo', 'sa-c').ok, false); // terminated pod does not count
  assert.match((checkPlacement(p, 'n1', 'demo', 'nobody') as { reason: string }).reason, /service account nobody/);
  assert.match((checkPlacement(p, 'n1', 'other', 'x') as { reason: string }).reason, /namespace other/);
});
