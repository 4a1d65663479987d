import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decideOutbound } from '../../src/ztunnel/proxy/decide.ts';
import type { DecideState } from '../../src/ztunnel/proxy/decide.ts';
import type { MeshService, Workload } from '../../src/api/mesh.ts';

function wl(uid: string, ip: string, protocol: 'HBONE' | 'TCP', sa = 'default', ns = 'demo'): Workload {
  return {
    uid, name: uid, namespace: ns, addresses: [ip], node: 'n1', serviceAccount: sa, trustDomain: 'cluster.local',
    protocol, ready: true, labels: {}, canonicalName: uid, canonicalRevision: 'latest', services: {},
  };
}

/** A tiny StateView over plain arrays (test data). */
function state(workloads: Workload[], services: MeshService[]): DecideState {
  return {
    workloadByUid: (uid) => workloads.find((w) => w.uid === uid),
    workloadByAddress: (ip) => workloads.find((w) => w.addresses.includes(ip)),
    serviceByAddress: (ip, port) => {
      const service = services.find((s) => s.vips.includes(ip));
      const p = service?.ports.find((x) => x.port === port);
      return service && p ? { service, port: p } : undefined;
    },
    services: () => services,
  };
}

const a = wl('a', '10.0.0.1', 'HBONE', 'sa-a');
const b1 = wl('b1', '10.0.0.2', 'HBONE', 'sa-b');
const b2 = wl('b2', '10.0.0.3', 'HBONE', 'sa-b');
const legacy = wl('legacy', '10.0.0.9', 'TCP');
const svcB: MeshService = {
  name: 'b', namespace: 'demo', hostname: 'b.demo.svc.cluster.local', vips: ['10.96.0.10'],
  ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }, { port: 90, targetPort: 'metrics', protocol: 'TCP' }],
  endpoints: [
    { workloadUid: 'b1', address: '10.0.0.2', ports: { 80: 8080, 90: 9090 }, ready: true },
    { workloadUid: 'b2', address: '10.0.0.3', ports: { 80: 8081 }, ready: true },
  ],
};
const svcLegacy: MeshService = {
  name: 'legacy', namespace: 'demo', hostname: 'legacy.demo.svc.cluster.local', vips: ['10.96.0.20'],
  ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }],
  endpoints: [{ workloadUid: 'legacy', address: '10.0.0.9', ports: { 80: 8080 }, ready: true }],
};
const svcDown: MeshService = {
  name: 'down', namespace: 'demo', hostname: 'down.demo.svc.cluster.local', vips: ['10.96.0.30'],
  ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }],
  endpoints: [{ workloadUid: 'b1', address: '10.0.0.2', ports: { 80: 8080 }, ready: false }],
};
const svcEmpty: MeshService = { ...svcDown, name: 'empty', vips: ['10.96.0.40'], endpoints: [] };
const st = state([a, b1, b2, legacy], [svcB, svcLegacy, svcDown, svcEmpty]);

test('service VIP to an HBONE endpoint: hbone to <ip>:15008 with target port and identity', () => {
  const r = decideOutbound(st, a, { address: '10.96.0.10', port: 80 }, () => 0);
  assert.equal(r.kind, 'hbone');
  if (r.kind !== 'hbone') return;
  assert.equal(r.hboneAddress, '10.0.0.2:15008');
  assert.equal(r.target, '10.0.0.2:8080');
  assert.equal(r.dstIdentity, 'spiffe://cluster.local/ns/demo/sa/sa-b');
  assert.equal(r.dstWorkload.uid, 'b1');
  assert.equal(r.service?.name, 'b');
  const r2 = decideOutbound(st, a, { address: '10.96.0.10', port: 80 }, () => 0.99);
  assert.equal(r2.kind === 'hbone' && r2.target, '10.0.0.3:8081');
});

test('random choice spreads over ready endpoints', () => {
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const r = decideOutbound(st, a, { address: '10.96.0.10', port: 80 });
    if (r.kind === 'hbone') seen.add(r.dstWorkload.uid);
  }
  assert.deepEqual([...seen].sort(), ['b1', 'b2']);
});

test('only endpoints that have the service port are candidates', () => {
  for (let i = 0; i < 50; i++) {
    const r = decideOutbound(st, a, { address: '10.96.0.10', port: 90 });
    assert.equal(r.kind === 'hbone' && r.target, '10.0.0.2:9090');
  }
});

test('service port not defined on the VIP: reject ZT_NO_ROUTE', () => {
  const r = decideOutbound(st, a, { address: '10.96.0.10', port: 81 });
  assert.equal(r.kind, 'reject');
  assert.equal(r.kind === 'reject' && r.code, 'ZT_NO_ROUTE');
});

test('no ready endpoint (or none at all): reject ZT_NO_HEALTHY_UPSTREAM', () => {
  for (const vip of ['10.96.0.30', '10.96.0.40']) {
    const r = decideOutbound(st, a, { address: vip, port: 80 });
    assert.equal(r.kind === 'reject' && r.code, 'ZT_NO_HEALTHY_UPSTREAM', vip);
  }
});

test('service whose endpoint is not enrolled: passthrough to the endpoint', () => {
  const r = decideOutbound(st, a, { address: '10.96.0.20', port: 80 });
  assert.deepEqual({ kind: r.kind, target: r.kind === 'passthrough' && r.target }, { kind: 'passthrough', target: '10.0.0.9:8080' });
});

test('pod IP of an HBONE workload: hbone to it, same port', () => {
  const r = decideOutbound(st, a, { address: '10.0.0.3', port: 7000 });
  assert.equal(r.kind, 'hbone');
  if (r.kind !== 'hbone') return;
  assert.equal(r.hboneAddress, '10.0.0.3:15008');
  assert.equal(r.target, '10.0.0.3:7000');
  assert.equal(r.service, undefined);
});

test('pod IP of a TCP workload or an unknown address: passthrough', () => {
  const r = decideOutbound(st, a, { address: '10.0.0.9', port: 5432 });
  assert.equal(r.kind === 'passthrough' && r.target, '10.0.0.9:5432');
  const ext = decideOutbound(st, a, { address: '203.0.113.7', port: 443 });
  assert.equal(ext.kind === 'passthrough' && ext.target, '203.0.113.7:443');
  assert.equal(ext.kind === 'passthrough' && ext.dstWorkload, undefined);
});

test('IPv4-mapped destination is treated as IPv4; IPv6 targets are bracketed', () => {
  const r = decideOutbound(st, a, { address: '::ffff:10.0.0.2', port: 8080 });
  assert.equal(r.kind === 'hbone' && r.target, '10.0.0.2:8080');
  const v6 = decideOutbound(st, a, { address: 'fd00::1', port: 80 });
  assert.equal(v6.kind === 'passthrough' && v6.target, '[fd00::1]:80');
});
