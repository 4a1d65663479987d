/**
 * L4 metrics and access logs without sockets: Istio label computation for both reporters, response
 * flags, the label-set cap, byte counters while open and at close, run-time log levels and the
 * access-log record in text and JSON.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MeshService, Workload } from '../../src/api/mesh.ts';
import { StateStore } from '../../src/ztunnel/state/store.ts';
import { ConnectionTracker, type ClosedConnection, type ConnectionFields } from '../../src/ztunnel/proxy/connections.ts';
import { responseFlags, tcpLabels, TCP_LABEL_NAMES } from '../../src/ztunnel/metrics/labels.ts';
import { OVERFLOW, SeriesCap } from '../../src/ztunnel/metrics/series-cap.ts';
import { Registry, type Sample } from '../../src/ztunnel/metrics/prometheus.ts';
import { TcpMetrics } from '../../src/ztunnel/metrics/tcp-metrics.ts';
import { clearLogLevel, getLogLevel, getLogLevels, setLogFormat, setLogLevel, setLogLevels, setLogSink } from '../../src/shared/log.ts';
import { isAmbitError } from '../../src/shared/errors.ts';

const TD = 'cluster.local';
const id = (ns: string, sa: string) => `spiffe://${TD}/ns/${ns}/sa/${sa}`;

function workload(o: Partial<Workload> & Pick<Workload, 'uid' | 'name' | 'namespace' | 'addresses'>): Workload {
  return {
    node: 'node-1', serviceAccount: 'default', trustDomain: TD, protocol: 'HBONE', ready: true,
    labels: {}, canonicalName: o.name, canonicalRevision: 'latest', services: {}, ...o,
  };
}

const client = workload({
  uid: 'u-client', name: 'client-7d9f-abcde', namespace: 'shop', addresses: ['10.1.0.5'], serviceAccount: 'client-sa',
  labels: { app: 'client', version: 'v1' }, canonicalName: 'client', canonicalRevision: 'v1', workloadName: 'client',
});
const server = workload({
  uid: 'u-server', name: 'server-5c6b-xyz12', namespace: 'back', addresses: ['10.1.1.7'], serviceAccount: 'server-sa', node: 'node-2',
  labels: { 'app.kubernetes.io/name': 'server', 'app.kubernetes.io/version': 'v7' }, canonicalName: 'server', canonicalRevision: 'v7',
  services: { 'back/server': { 80: 8080 } },
});
const bare = workload({ uid: 'u-bare', name: 'bare', namespace: 'back', addresses: ['10.1.1.9'], canonicalName: 'bare-canonical' });
const svc: MeshService = {
  name: 'server', namespace: 'back', hostname: 'server.back.svc.cluster.local', vips: ['10.96.0.10'],
  ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }],
  endpoints: [{ workloadUid: 'u-server', address: '10.1.1.7', ports: { 80: 8080 }, ready: true }],
};

function state(): StateStore {
  const s = new StateStore();
  const r = s.apply({ workloads: { upsert: [client, server, bare] }, services: { upsert: [svc] } });
  assert.deepEqual(r.rejected, []);
  return s;
}

const outbound: ConnectionFields = {
  direction: 'outbound', podUid: 'u-client', src: '10.1.0.5:40000', dst: '10.1.1.7:8080', hboneAddr: '10.1.1.7:15008',
  srcIdentity: id('shop', 'client-sa'), dstIdentity: id('back', 'server-sa'),
  srcWorkload: 'shop/client-7d9f-abcde', dstWorkload: 'back/server-5c6b-xyz12', service: 'server.back.svc.cluster.local', protocol: 'HBONE',
};
const inbound: ConnectionFields = {
  direction: 'inbound', podUid: 'u-server', src: '10.1.0.5:40000', dst: '10.1.1.7:8080', hboneAddr: '10.1.1.7:15008',
  srcIdentity: id('shop', 'client-sa'), dstIdentity: id('back', 'server-sa'),
  srcWorkload: 'shop/client-7d9f-abcde', dstWorkload: 'back/server-5c6b-xyz12', protocol: 'HBONE',
};
const info = (f: ConnectionFields) => ({ ...f, id: 1, startedAt: new Date(), bytesSent: 0, bytesReceived: 0 });

test('labels: both reporters describe the same edge with Istio names and values', () => {
  const s = state();
  const src = tcpLabels(info(outbound), s);
  const dst = tcpLabels(info(inbound), s);
  const expected = {
    source_workload: 'client', source_workload_namespace: 'shop', source_principal: id('shop', 'client-sa'),
    source_app: 'client', source_version: 'v1', source_canonical_service: 'client', source_canonical_revision: 'v1', source_cluster: 'Kubernetes',
    // no workloadName: the canonical name stands in (never the pod name)
    destination_workload: 'server', destination_workload_namespace: 'back', destination_principal: id('back', 'server-sa'),
    destination_app: 'server', destination_version: 'v7', destination_canonical_service: 'server', destination_canonical_revision: 'v7',
    destination_cluster: 'Kubernetes',
    destination_service: 'server.back.svc.cluster.local', destination_service_namespace: 'back', destination_service_name: 'server',
    request_protocol: 'tcp', connection_security_policy: 'mutual_tls',
  };
  assert.deepEqual(src, { reporter: 'source', ...expected });
  // The inbound side only sees the pod address; it finds the service from the target port.
  assert.deepEqual(dst, { reporter: 'destination', ...expected });
  assert.deepEqual(Object.keys(src).sort(), [...TCP_LABEL_NAMES].sort());
  for (const v of Object.values(src)) assert.ok(!/10\.1\.|abcde|xyz12|40000/.test(v), `no IP, pod name or port in ${v}`);
  assert.equal(tcpLabels(info(outbound), s, { cluster: 'east' }).source_cluster, 'east');
});

test('labels: plaintext inbound has no principal; unknown peers and passthrough say unknown', () => {
  const s = state();
  const plain = tcpLabels(info({ ...inbound, protocol: 'TCP', srcIdentity: undefined, src: '10.1.0.5:5000' }), s);
  assert.equal(plain.source_principal, 'unknown', 'an IP is not an authenticated identity');
  assert.equal(plain.source_workload, 'client', 'the source workload is still known by its address');
  assert.equal(plain.connection_security_policy, 'unknown');
  const stranger = tcpLabels(info({ ...inbound, protocol: 'TCP', srcIdentity: undefined, src: '192.168.9.9:5000', srcWorkload: undefined }), s);
  for (const k of ['source_workload', 'source_workload_namespace', 'source_principal', 'source_app', 'source_cluster'] as const) assert.equal(stranger[k], 'unknown', k);
  const out = tcpLabels(info({ ...outbound, protocol: 'TCP', dst: '203.0.113.4:443', hboneAddr: undefined, dstIdentity: undefined, dstWorkload: undefined, service: undefined }), s);
  for (const k of ['destination_workload', 'destination_principal', 'destination_service', 'destination_service_name'] as const) assert.equal(out[k], 'unknown', k);
  assert.equal(out.connection_security_policy, 'unknown');
  const toBare = tcpLabels(info({ ...outbound, dst: '10.1.1.9:9000', service: undefined }), s);
  assert.equal(toBare.destination_workload, 'bare-canonical');
  assert.equal(toBare.destination_service, 'unknown', 'a port no service maps to names no service');
});

test('response flags: DENY for policy refusals (both sides), CONNECT for never-connected, - otherwise', () => {
  const closed = (error: string | undefined, established: boolean): ClosedConnection => ({ ...info(inbound), durationMs: 1, error, established });
  assert.equal(responseFlags(closed(undefined, true)), '-');
  assert.equal(responseFlags(closed('ZT_DENIED: allow-nothing (back/deny)', false)), 'DENY');
  assert.equal(responseFlags(closed('ZT_POLICY_CHANGED: closed after a policy change', true)), 'DENY');
  assert.equal(responseFlags(closed('ZT_HBONE_401: peer answered 401', false)), 'DENY');
  assert.equal(responseFlags(closed('ZT_NO_ROUTE: nothing behind 10.96.0.99:80', false)), 'CONNECT');
  assert.equal(responseFlags(closed('ECONNREFUSED', false)), 'CONNECT');
  assert.equal(responseFlags(closed('ECONNRESET', true)), '-', 'a reset after bytes flowed still connected');
});

test('the label-set cap: known sets keep their series, new ones beyond the cap go to one overflow set', () => {
  const s = state();
  let warned = 0;
  const cap = new SeriesCap(2, () => warned++);
  const a = tcpLabels(info(outbound), s);
  const b = tcpLabels(info(inbound), s);
  const c = { ...a, destination_workload: 'other' };
  assert.equal(cap.admit(a), a);
  assert.equal(cap.admit(b), b);
  const o = cap.admit(c);
  assert.notEqual(o, c);
  assert.equal(o.reporter, 'source');
  assert.equal(o.request_protocol, 'tcp');
  assert.equal(o.connection_security_policy, 'mutual_tls');
  assert.equal(o.source_workload, OVERFLOW);
  assert.equal(o.destination_service, OVERFLOW);
  assert.equal(cap.admit(a), a, 'a known set still counts as itself');
  cap.admit({ ...a, source_app: 'x' });
  assert.deepEqual([cap.size, cap.overflowed, warned], [2, 2, 1]);
  assert.throws(() => new SeriesCap(0), RangeError);
});

async function samples(reg: Registry, name: string): Promise<Sample[]> {
  const m = reg.get(name);
  assert.ok(m, `${name} registered`);
  await m.collect();
  return m.samples();
}
const total = (xs: Sample[]) => xs.reduce((n, x) => n + x.value, 0);

test('TCP metrics: opened/closed/failed counts, bytes while open (at scrape) and at close, cap overflow counted', async () => {
  const prev = setLogSink(() => {});
  try {
    const s = state();
    const registry = new Registry();
    const tracker = new ConnectionTracker();
    const m = new TcpMetrics({ registry, state: s, maxLabelSets: 2 });
    const detach = m.attach(tracker);
    let sent = 0;
    let received = 0;
    const r = tracker.open(outbound);
    r.countFrom(() => ({ sent, received }));
    sent = 1000;
    received = 250;
    m.sync(); // a scrape while open
    assert.equal(total(await samples(registry, 'istio_tcp_received_bytes_total')), 1000, 'request bytes (client->server) are received_bytes');
    assert.equal(total(await samples(registry, 'istio_tcp_sent_bytes_total')), 250, 'response bytes are sent_bytes');
    sent = 1500;
    received = 300;
    m.sync();
    m.sync();
    r.close();
    assert.equal(total(await samples(registry, 'istio_tcp_received_bytes_total')), 1500, 'no double counting across syncs and close');
    assert.equal(total(await samples(registry, 'istio_tcp_sent_bytes_total')), 300);

    const denied = tracker.open(inbound);
    denied.close('ZT_DENIED: no ALLOW policy matched (back/only-admin)');
    const opened = await samples(registry, 'istio_tcp_connections_opened_total');
    assert.equal(total(opened), 2);
    assert.ok(opened.every((x) => x.labels.response_flags === '-'));
    const closed = await samples(registry, 'istio_tcp_connections_closed_total');
    assert.deepEqual(closed.map((x) => [x.labels.reporter, x.labels.response_flags, x.value]).sort(), [['destination', 'DENY', 1], ['source', '-', 1]]);
    const failed = await samples(registry, 'istio_tcp_connections_failed_total');
    assert.deepEqual(failed.map((x) => [x.labels.reporter, x.labels.response_flags, x.labels.destination_workload, x.value]), [['destination', 'DENY', 'server', 1]]);

    // A third label set is past the cap of 2: counted, under "overflow".
    const third = tracker.open({ ...outbound, dst: '10.1.1.9:9000', service: undefined });
    third.close();
    const opened2 = await samples(registry, 'istio_tcp_connections_opened_total');
    assert.equal(total(opened2), 3);
    assert.equal(opened2.filter((x) => x.labels.source_workload === OVERFLOW).length, 1);
    assert.equal(total(await samples(registry, 'ambit_metrics_overflow_connections_total')), 1);
    assert.equal(total(await samples(registry, 'ambit_metrics_label_sets')), 2);
    const text = await registry.metrics();
    assert.match(text, /istio_tcp_connections_opened_total\{reporter="source",source_workload="client",/);
    detach();
  } finally {
    setLogSink(prev);
  }
});

test('log levels change at run time, per component; access records in text and JSON', () => {
  const lines: string[] = [];
  const prev = setLogSink((l) => lines.push(l));
  try {
    const t = new ConnectionTracker();
    const r1 = t.open(inbound);
    r1.addSent(12);
    r1.addReceived(34);
    r1.close();
    assert.equal(lines.length, 1);
    for (const part of ['info access connection complete', 'src.addr=10.1.0.5:40000', 'src.workload=client-7d9f-abcde', 'src.namespace=shop',
      `src.identity=${id('shop', 'client-sa')}`, 'dst.workload=server-5c6b-xyz12', 'dst.namespace=back', 'direction=inbound', 'bytes_sent=12', 'bytes_recv=34']) {
      assert.ok(lines[0].includes(part), `${part} in ${lines[0]}`);
    }
    setLogLevels('access:off');
    t.open(inbound).close();
    t.open(inbound).close('ZT_DENIED: x');
    assert.equal(lines.length, 1, 'access log off, alone');
    assert.equal(getLogLevel('agent'), 'info');
    setLogLevels('access:warn');
    t.open(inbound).close();
    t.open(inbound).close('ZT_DENIED: denied by back/deny-shop');
    assert.equal(lines.length, 2, 'at warn only the failed/denied attempt is logged');
    assert.match(lines[1], /^\S+ warn access connection complete .*error="ZT_DENIED: denied by back\/deny-shop"/);
    setLogFormat('json');
    clearLogLevel('access');
    t.open(outbound).close();
    const rec = JSON.parse(lines[2]) as Record<string, unknown>;
    assert.equal(rec.component, 'access');
    assert.equal(rec.msg, 'connection complete');
    assert.equal(rec['dst.service'], 'server.back.svc.cluster.local');
    assert.equal(rec.bytes_sent, 0);
    assert.equal(typeof rec.duration, 'string');
    assert.throws(() => setLogLevels('info,access:loud'), (e) => isAmbitError(e, 'LOG_BAD_LEVEL') && /access:loud/.test(e.message));
    assert.equal(getLogLevel('access'), 'info', 'a bad spec changes nothing');
    setLogLevels('warn,agent.state:debug');
    assert.deepEqual(getLogLevels(), { level: 'warn', components: { 'agent.state': 'debug' } });
    assert.equal(getLogLevel('agent.state.sub'), 'debug', 'children follow their parent');
  } finally {
    setLogFormat('text');
    setLogLevel('info');
    clearLogLevel('agent.state');
    clearLogLevel('access');
    setLogSink(prev);
  }
});
