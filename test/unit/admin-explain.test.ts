/**
 * The admin API's /explain and /config_dump logic over a real StateStore: routes from decideOutbound,
 * mTLS mode and authorization from the data path's own functions, the deciding policy named.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StateStore } from '../../src/ztunnel/state/store.ts';
import { explainConnection } from '../../src/ztunnel/admin/explain.ts';
import { buildConfigDump } from '../../src/ztunnel/admin/config-dump.ts';
import { ConnectionTracker } from '../../src/ztunnel/proxy/connections.ts';
import type { MeshService, Workload } from '../../src/api/mesh.ts';
import { emptyMatch, type AuthorizationRecord, type PeerAuthenticationRecord } from '../../src/api/policy.ts';

function wl(name: string, ip: string, protocol: 'HBONE' | 'TCP', o: { ns?: string; sa?: string; node?: string; labels?: Record<string, string> } = {}): Workload {
  return {
    uid: `uid-${name}`, name, namespace: o.ns ?? 'demo', addresses: [ip], node: o.node ?? 'node-2', serviceAccount: o.sa ?? name, trustDomain: 'cluster.local',
    protocol, ready: true, labels: o.labels ?? { app: name }, canonicalName: name, canonicalRevision: 'latest', services: {},
  };
}

const client = wl('client', '10.244.1.2', 'HBONE', { node: 'node-1' });
const legacy = wl('legacy', '10.244.1.9', 'TCP', { ns: 'plain', node: 'node-1' });
const s1 = wl('server-1', '10.244.2.2', 'HBONE', { labels: { app: 'server', v: '1' } });
const s2 = wl('server-2', '10.244.2.3', 'HBONE', { labels: { app: 'server', v: '2' } });
const plainsrv = wl('plainsrv', '10.244.2.9', 'TCP', { ns: 'plain' });
const server: MeshService = {
  name: 'server', namespace: 'demo', hostname: 'server.demo.svc.cluster.local', vips: ['10.96.0.10'],
  ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }],
  endpoints: [
    { workloadUid: s1.uid, address: '10.244.2.2', ports: { 80: 8080 }, ready: true },
    { workloadUid: s2.uid, address: '10.244.2.3', ports: { 80: 8080 }, ready: true },
  ],
};

function store(policies: AuthorizationRecord[] = [], peer: PeerAuthenticationRecord[] = []): StateStore {
  const st = new StateStore();
  const r = st.apply({
    workloads: { upsert: [client, legacy, s1, s2, plainsrv] }, services: { upsert: [server] },
    authorizations: { upsert: policies }, peerAuthentications: { upsert: peer },
  });
  assert.deepEqual(r.rejected, []);
  return st;
}

const explain = (st: StateStore, src: string, address: string, port: number) =>
  explainConnection(st, { node: 'node-1', source: src, destination: { address, port }, servedUids: new Set([client.uid]) });

const denyClient: AuthorizationRecord = {
  name: 'deny-client', namespace: 'demo', scope: 'WORKLOAD', selector: { v: '2' }, action: 'DENY', warnings: [],
  rules: [{ clauses: [[{ ...emptyMatch(), principals: ['cluster.local/ns/demo/sa/client'] }]] }],
};
const allowAll: AuthorizationRecord = { name: 'allow-all', namespace: 'demo', scope: 'NAMESPACE', action: 'ALLOW', warnings: [], rules: [{ clauses: [] }] };

test('service VIP: every endpoint listed, HBONE with identities, no policy -> allow', () => {
  const x = explain(store(), 'demo/client', '10.96.0.10', 80);
  assert.equal(x.captured, true);
  assert.equal(x.route.kind, 'hbone');
  assert.equal(x.destination.service?.hostname, 'server.demo.svc.cluster.local');
  assert.deepEqual(x.endpoints.map((e) => e.target).sort(), ['10.244.2.2:8080', '10.244.2.3:8080']);
  for (const e of x.endpoints) {
    assert.equal(e.transport, 'HBONE');
    assert.equal(e.enforced, true);
    assert.equal(e.mtls?.mode, 'PERMISSIVE');
    assert.equal(e.allowed, true);
  }
  assert.equal(x.verdict, 'allow');
  assert.equal(x.source.servedHere, true);
});

test('a DENY policy on one endpoint: that endpoint denied by it, the verdict depends on the endpoint', () => {
  const x = explain(store([allowAll, denyClient]), 'demo/client', '10.96.0.10', 80);
  const e2 = x.endpoints.find((e) => e.target === '10.244.2.3:8080')!;
  assert.equal(e2.allowed, false);
  assert.equal(e2.decidedBy, 'demo/deny-client');
  assert.ok(e2.authz?.verdicts.some((v) => v.policy === 'demo/deny-client' && v.matched));
  const e1 = x.endpoints.find((e) => e.target === '10.244.2.2:8080')!;
  assert.equal(e1.allowed, true);
  assert.equal(e1.decidedBy, 'demo/allow-all');
  assert.equal(x.verdict, 'depends-on-endpoint');
  // Straight to the pod IP: one endpoint, denied.
  const direct = explain(store([allowAll, denyClient]), 'demo/client', '10.244.2.3', 8080);
  assert.equal(direct.verdict, 'deny');
  assert.match(direct.summary, /demo\/deny-client/);
});

test('a pod outside the mesh: not captured, plain TCP; STRICT refuses it at the destination', () => {
  const strict: PeerAuthenticationRecord = { name: 'strict', namespace: 'demo', scope: 'NAMESPACE', mode: 'STRICT', portLevel: {} };
  const x = explain(store([], [strict]), 'plain/legacy', '10.244.2.2', 8080);
  assert.equal(x.captured, false);
  assert.equal(x.route.kind, 'direct');
  assert.equal(x.endpoints[0].transport, 'TCP');
  assert.equal(x.endpoints[0].allowed, false);
  assert.equal(x.endpoints[0].decidedBy, 'demo/strict');
  assert.equal(x.verdict, 'deny');
  const permissive = explain(store(), 'plain/legacy', '10.244.2.2', 8080);
  assert.equal(permissive.verdict, 'allow');
});

test('passthrough to a non-mesh pod and outside the mesh; reject for a missing service port', () => {
  const st = store([allowAll]);
  const p = explain(st, 'demo/client', '10.244.2.9', 8080);
  assert.equal(p.route.kind, 'passthrough');
  assert.equal(p.endpoints[0].enforced, false);
  assert.equal(p.verdict, 'allow');
  const out = explain(st, 'demo/client', '192.0.2.1', 443);
  assert.equal(out.route.kind, 'passthrough');
  assert.match(out.summary, /outside the mesh/);
  const r = explain(st, 'demo/client', '10.96.0.10', 81);
  assert.equal(r.verdict, 'reject');
  assert.equal(r.route.code, 'ZT_NO_ROUTE');
});

test('an unknown source pod is an error naming it', () => {
  assert.throws(() => explain(store(), 'demo/nope', '10.96.0.10', 80), (e: Error & { code?: string }) =>
    e.code === 'ZT_EXPLAIN_NO_SOURCE' && /demo\/nope/.test(e.message));
});

test('config dump: state, served pods, certificates with chain, live connections with bytes', () => {
  const st = store([allowAll]);
  const tracker = new ConnectionTracker({ accessLog: false });
  const rec = tracker.open({ direction: 'outbound', podUid: client.uid, src: '10.244.1.2:40000', dst: '10.244.2.2:8080', protocol: 'HBONE', hboneAddr: '10.244.2.2:15008' });
  rec.addSent(5);
  rec.addReceived(7);
  const notBefore = new Date('2026-01-01T00:00:00Z');
  const notAfter = new Date('2026-01-02T00:00:00Z');
  const dump = buildConfigDump({
    node: 'node-1', state: st, connections: tracker,
    certificates: {
      list: () => [{ identity: 'spiffe://cluster.local/ns/demo/sa/client', serial: 'AB01', notBefore, notAfter, state: 'valid' }],
      current: () => undefined,
    },
    pods: () => [{ op: 'add', uid: client.uid, name: 'client', namespace: 'demo', serviceAccount: 'client', ips: ['10.244.1.2'], netnsPath: '/run/netns/x' }],
  });
  assert.equal(dump.node, 'node-1');
  assert.equal(dump.workloads.length, 5);
  assert.equal(dump.services[0].name, 'server');
  assert.equal(dump.policies[0].name, 'allow-all');
  assert.deepEqual(dump.certificates[0], {
    identity: 'spiffe://cluster.local/ns/demo/sa/client', state: 'valid', serial: 'AB01',
    notBefore: notBefore.toISOString(), notAfter: notAfter.toISOString(), lastError: undefined, nextAttemptAt: undefined, chain: [],
  });
  assert.equal(dump.connections.length, 1);
  assert.equal(dump.connections[0].bytesSent, 5);
  assert.equal(dump.connections[0].bytesReceived, 7);
  assert.equal(dump.pods[0].netns, '/run/netns/x');
  JSON.parse(JSON.stringify(dump)); // serialisable
  rec.close();
  assert.equal(buildConfigDump({ node: 'n', state: st, connections: tracker, certificates: { list: () => [], current: () => undefined }, pods: () => [] }).connections.length, 0);
});
