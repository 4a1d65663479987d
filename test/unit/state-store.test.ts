import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MeshService, Workload } from '../../src/api/mesh.ts';
import { StateStore } from '../../src/ztunnel/state/store.ts';

function wl(uid: string, ips: string[], extra: Partial<Workload> = {}): Workload {
  return {
    uid, name: uid, namespace: 'demo', addresses: ips, node: 'n1', serviceAccount: 'default', trustDomain: 'cluster.local',
    protocol: 'HBONE', ready: true, labels: {}, canonicalName: uid, canonicalRevision: 'latest', services: {}, ...extra,
  };
}
function svc(name: string, vips: string[], ports: number[]): MeshService {
  return {
    name, namespace: 'demo', hostname: `${name}.demo.svc.cluster.local`, vips,
    ports: ports.map((p) => ({ port: p, targetPort: p + 8000, protocol: 'TCP' as const })), endpoints: [],
  };
}

test('indexes workloads by uid and by each address; updates move the address index', () => {
  const s = new StateStore();
  s.apply({ workloads: { upsert: [wl('a', ['10.0.0.1', 'fd00::a']), wl('b', ['10.0.0.2'])] } });
  assert.equal(s.workloadByUid('a')?.name, 'a');
  assert.equal(s.workloadByAddress('10.0.0.1')?.uid, 'a');
  assert.equal(s.workloadByAddress('FD00::A')?.uid, 'a');
  assert.equal(s.workloadByAddress('::ffff:10.0.0.2')?.uid, 'b', 'IPv4-mapped addresses as sockets report them');
  assert.equal(s.workloads().length, 2);

  s.apply({ workloads: { upsert: [wl('a', ['10.0.0.3'])] } });
  assert.equal(s.workloadByAddress('10.0.0.1'), undefined, 'old address forgotten');
  assert.equal(s.workloadByAddress('10.0.0.3')?.uid, 'a');

  s.apply({ workloads: { remove: ['a'] } });
  assert.equal(s.workloadByUid('a'), undefined);
  assert.equal(s.workloadByAddress('10.0.0.3'), undefined);
  assert.deepEqual(s.workloads().map((w) => w.uid), ['b']);
});

test('an address reused by a new pod points at the new pod, and survives removal of the old one', () => {
  const s = new StateStore();
  s.apply({ workloads: { upsert: [wl('old', ['10.0.0.1'])] } });
  s.apply({ workloads: { upsert: [wl('new', ['10.0.0.1'])] } });
  assert.equal(s.workloadByAddress('10.0.0.1')?.uid, 'new');
  s.apply({ workloads: { remove: ['old'] } });
  assert.equal(s.workloadByAddress('10.0.0.1')?.uid, 'new');
});

test('services by key and by vip:port', () => {
  const s = new StateStore();
  s.apply({ services: { upsert: [svc('a', ['10.96.0.1', 'fd00:96::1'], [80, 443])] } });
  assert.equal(s.service('demo/a')?.name, 'a');
  assert.equal(s.serviceByAddress('10.96.0.1', 443)?.port.targetPort, 8443);
  assert.equal(s.serviceByAddress('fd00:96::1', 80)?.service.name, 'a');
  assert.equal(s.serviceByAddress('10.96.0.1', 81), undefined);
  s.apply({ services: { upsert: [svc('a', ['10.96.0.2'], [80])] } });
  assert.equal(s.serviceByAddress('10.96.0.1', 80), undefined);
  assert.equal(s.serviceByAddress('10.96.0.2', 80)?.service.name, 'a');
  s.apply({ services: { remove: ['demo/a'] } });
  assert.equal(s.serviceByAddress('10.96.0.2', 80), undefined);
  assert.deepEqual(s.services(), []);
});

test('bad records are refused with a reason and the previous record is kept', () => {
  const s = new StateStore();
  s.apply({ workloads: { upsert: [wl('a', ['10.0.0.1'])] }, services: { upsert: [svc('x', ['10.96.0.1'], [80])] } });
  const bad = wl('a', ['999.0.0.1']);
  const badSvc = svc('x', ['10.96.0.1'], [80]);
  badSvc.ports[0].port = 0;
  const r = s.apply({
    workloads: { upsert: [bad, wl('b', ['10.0.0.2']), { ...wl('c', ['10.0.0.3']), protocol: 'QUIC' } as unknown as Workload] },
    services: { upsert: [badSvc] },
  });
  assert.equal(r.changed, true);
  assert.deepEqual(r.rejected.map((x) => [x.kind, x.name]), [['workload', 'a'], ['workload', 'c'], ['service', 'demo/x']]);
  assert.match(r.rejected[0].reason, /addresses\[0\].*999\.0\.0\.1/);
  assert.match(r.rejected[1].reason, /protocol/);
  assert.match(r.rejected[2].reason, /ports\[0\]\.port/);
  assert.deepEqual(s.workloadByUid('a')?.addresses, ['10.0.0.1'], 'previous record kept');
  assert.equal(s.workloadByUid('b')?.name, 'b', 'good records in the same batch applied');
  assert.equal(s.serviceByAddress('10.96.0.1', 80)?.service.name, 'x');
});

test('onChange fires once per changing batch; version and generation advance', () => {
  const s = new StateStore();
  let calls = 0;
  const off = s.onChange(() => calls++);
  s.apply({ workloads: { upsert: [wl('a', ['10.0.0.1']), wl('b', ['10.0.0.2'])] }, version: 'v1' });
  assert.equal(calls, 1);
  assert.equal(s.version, 'v1');
  assert.equal(s.generation, 1);
  s.apply({ workloads: { remove: ['nope'] } });
  assert.equal(calls, 1, 'no change, no call');
  s.apply({ workloads: { remove: ['a'] } });
  assert.equal(calls, 2);
  assert.notEqual(s.version, 'v1');
  off();
  s.apply({ workloads: { remove: ['b'] } });
  assert.equal(calls, 2);
});

test('stored records are copies (the caller cannot change them afterwards)', () => {
  const s = new StateStore();
  const w = wl('a', ['10.0.0.1']);
  s.apply({ workloads: { upsert: [w] } });
  w.addresses.push('10.0.0.99');
  assert.deepEqual(s.workloadByUid('a')?.addresses, ['10.0.0.1']);
  assert.equal(s.workloadByAddress('10.0.0.99'), undefined);
});
