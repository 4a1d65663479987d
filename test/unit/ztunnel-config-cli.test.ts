/** `ambit ztunnel-config` / `ambit explain`: argument errors, table columns, json/yaml output, explain text. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parse as parseYaml } from 'yaml';
import { parseZtunnelConfigArgs, render, run } from '../../src/cli/ztunnel-config.ts';
import { formatExplanation, parseExplainArgs, run as runExplain } from '../../src/cli/explain.ts';
import { parseAdminAddress } from '../../src/cli/agent-admin.ts';
import { certificatesTable, connectionsTable, policiesTable, servicesTable, workloadsTable, type AgentDump } from '../../src/cli/ztunnel-tables.ts';
import type { ConfigDump } from '../../src/ztunnel/admin/config-dump.ts';
import type { Explanation } from '../../src/ztunnel/admin/explain.ts';

async function quiet(fn: () => Promise<number>): Promise<{ code: number; err: string }> {
  const write = process.stderr.write.bind(process.stderr);
  let err = '';
  process.stderr.write = ((chunk: string) => { err += chunk; return true; }) as typeof process.stderr.write;
  try {
    return { code: await fn(), err };
  } finally {
    process.stderr.write = write;
  }
}

const usage = (fn: () => unknown, re: RegExp) => assert.throws(fn, (e: Error & { code?: string }) => e.code === 'CLI_USAGE' && re.test(e.message));

test('ztunnel-config arguments', () => {
  assert.deepEqual(parseZtunnelConfigArgs(['workloads']), { what: 'workloads', node: undefined, admin: undefined, output: 'short' });
  assert.deepEqual(parseZtunnelConfigArgs(['workload', '--node', 'node-2', '-o', 'json']), { what: 'workloads', node: 'node-2', admin: undefined, output: 'json' });
  assert.equal(parseZtunnelConfigArgs(['all', '-oyaml']).output, 'yaml');
  assert.equal(parseZtunnelConfigArgs(['all', '--output=json']).output, 'json');
  assert.equal(parseZtunnelConfigArgs(['certs', '--admin', '[::1]:15000']).what, 'certificates');
  usage(() => parseZtunnelConfigArgs(['all', '-o', 'xml']), /-o must be short, json or yaml, got "xml"/);
  usage(() => parseZtunnelConfigArgs(['nodes']), /unknown subcommand "nodes"/);
  usage(() => parseZtunnelConfigArgs([]), /say what to show/);
  usage(() => parseZtunnelConfigArgs(['all', '--node']), /--node needs a value/);
  usage(() => parseZtunnelConfigArgs(['all', '--bogus', 'x']), /unknown flag "--bogus"/);
  usage(() => parseZtunnelConfigArgs(['all', 'extra']), /unexpected argument "extra"/);
  usage(() => parseZtunnelConfigArgs(['all', '--admin', 'localhost']), /--admin must be HOST:PORT.*"localhost"/);
  usage(() => parseZtunnelConfigArgs(['all', '--admin', '127.0.0.1:15000', '--node', 'node-1']), /give one of them/);
  assert.deepEqual(parseAdminAddress('agent.example:15000'), { host: 'agent.example', port: 15000 });
  assert.equal(parseAdminAddress('1.2.3.4:0'), undefined);
});

test('explain arguments: the bad value is named', () => {
  const a = parseExplainArgs(['mesh/client', '10.96.0.10:80']);
  assert.deepEqual([a.namespace, a.pod, a.destination, a.output], ['mesh', 'client', { address: '10.96.0.10', port: 80 }, 'short']);
  assert.deepEqual(parseExplainArgs(['mesh/client', '[fd00::1]:8080', '-o', 'json']).destination, { address: 'fd00::1', port: 8080 });
  usage(() => parseExplainArgs(['mesh/client', 'server:80']), /ADDRESS:PORT "server:80" is not valid/);
  usage(() => parseExplainArgs(['mesh/client', '10.96.0.10']), /ADDRESS:PORT "10.96.0.10" is not valid/);
  usage(() => parseExplainArgs(['mesh/client', '10.96.0.10:70000']), /"10.96.0.10:70000"/);
  usage(() => parseExplainArgs(['mesh/client', '10.96.0.300:80']), /"10.96.0.300:80"/);
  usage(() => parseExplainArgs(['client', '10.96.0.10:80']), /NAMESPACE\/POD, got "client"/);
  usage(() => parseExplainArgs(['mesh/client']), /NAMESPACE\/POD ADDRESS:PORT/);
  usage(() => parseExplainArgs(['mesh/client', '10.96.0.10:80', '-o', 'wide']), /got "wide"/);
});

test('usage errors exit 2 with the message and the usage', async () => {
  let r = await quiet(() => run(['bogus']));
  assert.equal(r.code, 2);
  assert.match(r.err, /unknown subcommand "bogus"/);
  assert.match(r.err, /usage: ambit ztunnel-config/);
  r = await quiet(() => run(['all', '-o', 'table']));
  assert.equal(r.code, 2);
  assert.match(r.err, /-o must be short, json or yaml, got "table"/);
  r = await quiet(() => runExplain(['mesh/x', 'nope:1']));
  assert.equal(r.code, 2);
  assert.match(r.err, /ADDRESS:PORT "nope:1"/);
  assert.match(r.err, /usage: ambit explain/);
});

function dump(node: string): ConfigDump {
  return {
    node, version: 'v1', generatedAt: '2026-01-01T00:00:00.000Z',
    workloads: [
      { uid: 'u1', name: 'client', namespace: 'mesh', addresses: ['10.244.17.2'], node: 'node-1', serviceAccount: 'client-sa', trustDomain: 'cluster.local', protocol: 'HBONE', ready: true, labels: {}, canonicalName: 'client', canonicalRevision: 'latest', services: {} },
      { uid: 'u2', name: 'legacy', namespace: 'plain', addresses: ['10.244.17.3'], node: 'node-1', serviceAccount: 'default', trustDomain: 'cluster.local', protocol: 'TCP', ready: true, labels: {}, canonicalName: 'legacy', canonicalRevision: 'latest', services: {} },
    ],
    services: [{
      name: 'server', namespace: 'mesh', hostname: 'server.mesh.svc.cluster.local', vips: ['10.96.0.10'], ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }],
      endpoints: [{ workloadUid: 'u3', address: '10.244.18.2', ports: { 80: 8080 }, ready: true }, { workloadUid: 'u4', address: '10.244.18.3', ports: { 80: 8080 }, ready: false }],
    }],
    policies: [{ name: 'deny-legacy', namespace: 'mesh', scope: 'NAMESPACE', action: 'DENY', rules: [], warnings: [] }, { name: 'mesh-allow', namespace: 'istio-system', scope: 'MESH', action: 'ALLOW', rules: [], warnings: [] }],
    peerAuthentications: [{ name: 'strict', namespace: 'mesh', scope: 'WORKLOAD', selector: { app: 'server' }, mode: 'STRICT', portLevel: { 8080: 'PERMISSIVE' } }],
    certificates: [
      { identity: 'spiffe://cluster.local/ns/mesh/sa/client-sa', state: 'valid', serial: '0A1B', notBefore: '2026-01-01T00:00:00.000Z', notAfter: '2026-01-02T00:00:00.000Z',
        chain: [{ type: 'Root', subject: 'O=ambit', serial: '01', notBefore: '2025-01-01T00:00:00.000Z', notAfter: '2035-01-01T00:00:00.000Z' }] },
      { identity: 'spiffe://cluster.local/ns/mesh/sa/other', state: 'failed', lastError: 'CA away', chain: [] },
    ],
    connections: [
      { id: 1, direction: 'outbound', podUid: 'u1', src: '10.244.17.2:40000', dst: '10.244.18.2:8080', hboneAddr: '10.244.18.2:15008', service: 'server.mesh.svc.cluster.local', protocol: 'HBONE', startedAt: '2026-01-01T00:00:00.000Z', bytesSent: 12, bytesReceived: 34 },
      { id: 2, direction: 'inbound', podUid: 'u1', src: '10.244.18.2:5000', dst: '10.244.17.2:8080', srcWorkload: 'mesh/server', protocol: 'TCP', startedAt: '2026-01-01T00:00:00.000Z', bytesSent: 1, bytesReceived: 2 },
    ],
    pods: [{ uid: 'u1', namespace: 'mesh', name: 'client', serviceAccount: 'client-sa', ips: ['10.244.17.2'], netns: '/run/netns/x' }],
  };
}

const one: AgentDump[] = [{ agent: 'node-1', dump: dump('node-1') }];
const two: AgentDump[] = [...one, { agent: 'node-2', dump: dump('node-2') }];
const lines = (s: string) => s.trimEnd().split('\n');
const cells = (line: string) => line.split(/\s{3,}/);

test('workloads and services tables: istioctl columns', () => {
  const w = lines(workloadsTable(one));
  assert.deepEqual(cells(w[0]), ['NAMESPACE', 'POD NAME', 'ADDRESS', 'NODE', 'WAYPOINT', 'PROTOCOL']);
  assert.deepEqual(cells(w[1]), ['mesh', 'client', '10.244.17.2', 'node-1', 'None', 'HBONE']);
  assert.deepEqual(cells(w[2]), ['plain', 'legacy', '10.244.17.3', 'node-1', 'None', 'TCP']);
  const s = lines(servicesTable(one));
  assert.deepEqual(cells(s[0]), ['NAMESPACE', 'SERVICE NAME', 'SERVICE VIP', 'WAYPOINT', 'ENDPOINTS']);
  assert.deepEqual(cells(s[1]), ['mesh', 'server', '10.96.0.10', 'None', '1/2']);
});

test('more than one agent: an AGENT column says where each row came from', () => {
  const w = lines(workloadsTable(two));
  assert.equal(cells(w[0])[0], 'AGENT');
  assert.equal(w.length, 5);
  assert.deepEqual(w.slice(1).map((l) => cells(l)[0]), ['node-1', 'node-1', 'node-2', 'node-2']);
});

test('policies, certificates and connections tables', () => {
  const p = policiesTable(one).split('\n\n').map(lines);
  assert.deepEqual(cells(p[0][0]), ['NAMESPACE', 'POLICY NAME', 'ACTION', 'SCOPE']);
  assert.deepEqual(cells(p[0][1]), ['mesh', 'deny-legacy', 'Deny', 'Namespace']);
  assert.deepEqual(cells(p[0][2]), ['istio-system', 'mesh-allow', 'Allow', 'Global']);
  assert.deepEqual(cells(p[1][0]), ['NAMESPACE', 'PEER AUTHENTICATION', 'MODE', 'SCOPE', 'PORT LEVEL']);
  assert.deepEqual(cells(p[1][1]), ['mesh', 'strict', 'STRICT', 'WorkloadSelector', '8080:PERMISSIVE']);

  const c = lines(certificatesTable(one, Date.parse('2026-01-01T12:00:00Z')));
  assert.deepEqual(cells(c[0]), ['CERTIFICATE NAME', 'TYPE', 'STATUS', 'VALID CERT', 'SERIAL NUMBER', 'NOT AFTER', 'NOT BEFORE']);
  assert.deepEqual(cells(c[1]), ['spiffe://cluster.local/ns/mesh/sa/client-sa', 'Leaf', 'Available', 'true', '0A1B', '2026-01-02T00:00:00.000Z', '2026-01-01T00:00:00.000Z']);
  assert.deepEqual(cells(c[2]).slice(1, 5), ['Root', 'Available', 'true', '01']);
  assert.deepEqual(cells(c[3]).slice(1, 5), ['Leaf', 'Unavailable', 'false', '-']);

  const k = lines(connectionsTable(one));
  assert.deepEqual(cells(k[0]), ['WORKLOAD', 'DIRECTION', 'LOCAL', 'REMOTE', 'REMOTE TARGET', 'PROTOCOL', 'SENT', 'RECEIVED']);
  assert.deepEqual(cells(k[1]), ['client.mesh', 'Outbound', '10.244.17.2:40000', '10.244.18.2:15008', 'server.mesh.svc.cluster.local (10.244.18.2:8080)', 'HBONE', '12', '34']);
  assert.deepEqual(cells(k[2]), ['client.mesh', 'Inbound', '10.244.17.2:8080', '10.244.18.2:5000', 'server.mesh', 'TCP', '1', '2']);
});

test('-o json / yaml: one agent one object, several a list; all = the whole dump', () => {
  const j = JSON.parse(render(one, 'workloads', 'json')) as { node: string; workloads: unknown[] };
  assert.equal(j.node, 'node-1');
  assert.equal(j.workloads.length, 2);
  const list = JSON.parse(render(two, 'all', 'json')) as ConfigDump[];
  assert.deepEqual(list.map((d) => d.node), ['node-1', 'node-2']);
  assert.equal(list[0].connections.length, 2);
  const y = parseYaml(render(one, 'policies', 'yaml')) as { policies: unknown[]; peerAuthentications: unknown[] };
  assert.equal(y.policies.length, 2);
  assert.equal(y.peerAuthentications.length, 1);
  const all = render(one, 'all', 'short');
  for (const h of ['WORKLOADS', 'SERVICES', 'POLICIES', 'CERTIFICATES', 'CONNECTIONS']) assert.match(all, new RegExp(`^${h}$`, 'm'));
});

test('explain text names the route, each policy and the deciding one', () => {
  const x: Explanation = {
    node: 'node-1',
    source: { uid: 'u1', namespace: 'mesh', name: 'client', node: 'node-1', protocol: 'HBONE', identity: 'spiffe://cluster.local/ns/mesh/sa/client-sa', addresses: ['10.244.17.2'], servedHere: true },
    destination: { address: '10.96.0.10', port: 80, service: { namespace: 'mesh', name: 'server', hostname: 'server.mesh.svc.cluster.local' } },
    captured: true,
    route: { kind: 'hbone', message: 'HBONE tunnel (mTLS) to 10.244.18.2:15008, CONNECT 10.244.18.2:8080' },
    endpoints: [{
      target: '10.244.18.2:8080', transport: 'HBONE', hboneAddress: '10.244.18.2:15008', expectedIdentity: 'spiffe://cluster.local/ns/mesh/sa/server-sa',
      enforced: true, mtls: { mode: 'PERMISSIVE' }, allowed: false, decidedBy: 'mesh/deny-client', reason: 'denied by mesh/deny-client: DENY policy matched',
      authz: { allow: false, policy: 'mesh/deny-client', reason: 'DENY policy matched', verdicts: [{ policy: 'mesh/deny-client', action: 'DENY', matched: true, rule: 0 }, { policy: 'mesh/allow-all', action: 'ALLOW', matched: true, rule: 0 }] },
    }],
    verdict: 'deny',
    summary: 'denied by mesh/deny-client: DENY policy matched',
  };
  const t = formatExplanation(x);
  assert.match(t, /^route\s+HBONE tunnel \(mTLS\) to 10\.244\.18\.2:15008/m);
  assert.match(t, /DENY\s+mesh\/deny-client\s+matches rule 0\s+<- decides/);
  assert.match(t, /ALLOW\s+mesh\/allow-all\s+matches/);
  assert.match(t, /^verdict\s+DENY\s+denied by mesh\/deny-client/m);
});
