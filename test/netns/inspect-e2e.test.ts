/**
 * Inspection on a two-node local mesh: `ambit ztunnel-config` reaches every node's agent admin API
 * (127.0.0.1:15000 inside the node netns) and lists every pod, service, certificate and a live
 * connection; -o json/yaml parse; `ambit explain` names the route and, for a denied pair, the
 * denying policy; /logging changes the level at run time.
 * Debug a failure: logs in /run/ambit/<instance>/logs (the test prints the instance).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { parse as parseYaml } from 'yaml';
import { AMBIT, ambitLocal, HTTP_GET, newInstance, sweepLeftovers } from './local-helpers.ts';
import { adminRequest } from '../../src/cli/agent-admin.ts';
import type { ConfigDump } from '../../src/ztunnel/admin/config-dump.ts';
import type { Explanation } from '../../src/ztunnel/admin/explain.ts';

const INSTANCE = newInstance();
const STATE = `/run/ambit/${INSTANCE}`;
const hint = () => `\n(instance ${INSTANCE}; logs in ${STATE}/logs)`;
const ambit = (args: string[], input?: string) => ambitLocal(INSTANCE, args, input);
/** A top-level ambit command (not `local`) against this instance. */
const cli = (args: string[]) => {
  const r = spawnSync(AMBIT, args, { env: { ...process.env, AMBIT_LOCAL_INSTANCE: INSTANCE }, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const MANIFESTS = `
apiVersion: v1
kind: Namespace
metadata: { name: shop, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Pod
metadata: { name: server, namespace: shop, labels: { app: server } }
spec:
  nodeName: node-2
  serviceAccountName: server-sa
  containers: [{ name: echo, image: ambit/echo, ports: [{ containerPort: 8080 }] }]
---
apiVersion: v1
kind: Service
metadata: { name: server, namespace: shop }
spec: { selector: { app: server }, ports: [{ name: http, port: 80, targetPort: 8080 }] }
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: shop, labels: { app: client } }
spec: { nodeName: node-1, serviceAccountName: client-sa, containers: [{ name: sleep, image: ambit/sleep }] }
---
apiVersion: v1
kind: Pod
metadata: { name: intruder, namespace: shop, labels: { app: intruder } }
spec: { nodeName: node-1, serviceAccountName: intruder-sa, containers: [{ name: sleep, image: ambit/sleep }] }
---
apiVersion: v1
kind: Namespace
metadata: { name: plain }
---
apiVersion: v1
kind: Pod
metadata: { name: legacy, namespace: plain }
spec: { nodeName: node-1, containers: [{ name: sleep, image: ambit/sleep }] }
`;

const DENY_INTRUDER = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-intruder, namespace: shop }
spec:
  selector: { matchLabels: { app: server } }
  action: DENY
  rules: [{ from: [{ source: { principals: ["cluster.local/ns/shop/sa/intruder-sa"] } }] }]
`;

const STRICT = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: strict, namespace: shop }
spec: { mtls: { mode: STRICT } }
`;

/** Keeps one HTTP/1.1 connection busy (a request every 300 ms); prints `open` after the first answer. */
const HOLD_CLIENT = `const s = require('node:net').connect(Number(process.argv[2]), process.argv[1]);
let n = 0;
const ask = () => s.write('GET /hold-' + n++ + ' HTTP/1.1\\r\\nhost: server\\r\\n\\r\\n');
s.on('connect', ask);
s.on('data', () => { if (n === 1) console.log('open'); setTimeout(ask, 300); });
s.on('error', () => {}); s.on('close', () => process.exit(0));`;

interface PodJson { metadata: { name: string; namespace: string }; status: { podIP: string } }
let pods: PodJson[] = [];
let vip = '';
let holder: ChildProcess | undefined;
const ip = (key: string) => pods.find((p) => `${p.metadata.namespace}/${p.metadata.name}` === key)!.status.podIP;

async function get(from: string, url: string, patienceMs = 15_000): Promise<void> {
  const deadline = Date.now() + patienceMs;
  for (;;) {
    const r = ambit(['exec', from, '--', 'node', HTTP_GET, url, '--timeout', '3000']);
    if (r.code === 0) return;
    if (Date.now() > deadline) assert.fail(`GET ${url} from ${from} failed: ${r.stderr}${hint()}`);
    await sleep(250);
  }
}

describe(`inspection CLI on a two-node mesh (instance ${INSTANCE})`, () => {
  before(async () => {
    sweepLeftovers();
    const up = ambit(['up', '--nodes', '2']);
    assert.equal(up.code, 0, up.stdout + up.stderr + hint());
    const a = ambit(['apply', '-f', '-'], MANIFESTS);
    assert.equal(a.code, 0, a.stdout + a.stderr + hint());
    pods = (JSON.parse(ambit(['get', 'pods', '-A', '-o', 'json']).stdout) as { items: PodJson[] }).items;
    vip = (JSON.parse(ambit(['get', 'services', '-n', 'shop', '-o', 'json']).stdout) as { items: { spec: { clusterIP: string } }[] }).items[0].spec.clusterIP;
    await get('shop/client', `http://${vip}/warm-up`);
    // A live connection client (node-1) -> server (node-2) over HBONE, held for the whole suite.
    holder = spawn(AMBIT, ['local', 'exec', 'shop/client', '--', 'node', '-e', HOLD_CLIENT, vip, '80'],
      { env: { ...process.env, AMBIT_LOCAL_INSTANCE: INSTANCE }, stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`the held connection did not open${hint()}`)), 15_000);
      holder!.stdout!.on('data', (d: Buffer) => { if (d.toString().includes('open')) { clearTimeout(t); resolve(); } });
    });
  });
  after(() => {
    holder?.kill('SIGTERM');
    ambit(['down']);
  });

  it('ztunnel-config all lists every pod, the service, each certificate and the live connection, per agent', () => {
    const r = cli(['ztunnel-config', 'all']);
    assert.equal(r.code, 0, r.stderr + hint());
    const out = r.stdout;
    for (const p of ['client', 'intruder', 'server', 'legacy']) assert.match(out, new RegExp(`\\s${p}\\s+${ip(p === 'legacy' ? 'plain/legacy' : `shop/${p}`).replace(/\./g, '\\.')}\\s`), `workload ${p}\n${out}`);
    assert.match(out, /^AGENT\s+NAMESPACE\s+POD NAME\s+ADDRESS\s+NODE\s+WAYPOINT\s+PROTOCOL$/m);
    assert.match(out, new RegExp(`^node-1\\s+shop\\s+server\\s+${vip.replace(/\./g, '\\.')}\\s+None\\s+1/1$`, 'm'), out);
    for (const [node, sa] of [['node-1', 'client-sa'], ['node-1', 'intruder-sa'], ['node-2', 'server-sa']]) {
      assert.match(out, new RegExp(`^${node}\\s+spiffe://cluster\\.local/ns/shop/sa/${sa}\\s+Leaf\\s+Available\\s+true\\s+[0-9A-F]+\\s`, 'm'), `certificate ${sa} on ${node}\n${out}`);
    }
    const server = ip('shop/server');
    assert.match(out, new RegExp(`^node-1\\s+client\\.shop\\s+Outbound\\s+${ip('shop/client')}:\\d+\\s+${server}:15008\\s+server\\.shop\\.svc\\.cluster\\.local \\(${server}:8080\\)\\s+HBONE\\s+\\d+\\s+\\d+$`, 'm'), out);
    assert.match(out, new RegExp(`^node-2\\s+server\\.shop\\s+Inbound\\s+${server}:8080\\s+${ip('shop/client')}:\\d+\\s+client\\.shop\\s+HBONE`, 'm'), out);
  });

  it('-o json parses: one dump per agent, certificates with serial and validity, connection bytes', () => {
    const r = cli(['ztunnel-config', 'all', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr + hint());
    const dumps = JSON.parse(r.stdout) as ConfigDump[];
    assert.deepEqual(dumps.map((d) => d.node), ['node-1', 'node-2']);
    const [n1, n2] = dumps;
    assert.deepEqual(n1.pods.map((p) => p.name).sort(), ['client', 'intruder']);
    assert.deepEqual(n2.pods.map((p) => p.name), ['server']);
    const cert = n2.certificates.find((c) => c.identity === 'spiffe://cluster.local/ns/shop/sa/server-sa');
    assert.ok(cert?.serial && cert.notBefore && cert.notAfter && cert.state === 'valid', JSON.stringify(n2.certificates));
    assert.ok(Date.parse(cert.notAfter!) > Date.now());
    assert.ok(cert.chain.some((c) => c.type === 'Root'));
    const conn = n1.connections.find((c) => c.direction === 'outbound' && c.dst === `${ip('shop/server')}:8080`);
    assert.ok(conn, JSON.stringify(n1.connections));
    assert.ok(conn.bytesSent > 0 && conn.bytesReceived > 0, `bytes counted: ${JSON.stringify(conn)}`);
  });

  it('--node picks one agent; yaml parses; an unknown node is named', () => {
    const r = cli(['ztunnel-config', 'connections', '--node', 'node-2', '-o', 'yaml']);
    assert.equal(r.code, 0, r.stderr + hint());
    const d = parseYaml(r.stdout) as { node: string; connections: { direction: string }[] };
    assert.equal(d.node, 'node-2');
    assert.ok(d.connections.some((c) => c.direction === 'inbound'));
    const t = cli(['ztunnel-config', 'workloads', '--node', 'node-1']);
    assert.match(t.stdout, /^NAMESPACE\s+POD NAME/m, 'one agent: no AGENT column');
    const bad = cli(['ztunnel-config', 'workloads', '--node', 'node-9']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /no node "node-9".*node-1, node-2/);
  });

  it('explain names the route: service VIP -> endpoint over HBONE; a non-mesh pod goes direct', () => {
    const r = cli(['explain', 'shop/client', `${vip}:80`]);
    assert.equal(r.code, 0, r.stderr + hint());
    const server = ip('shop/server');
    assert.match(r.stdout, /^destination\s.*service shop\/server \(server\.shop\.svc\.cluster\.local\)/m);
    assert.match(r.stdout, new RegExp(`^route\\s+HBONE tunnel \\(mTLS\\) to ${server}:15008, CONNECT ${server}:8080\\s+\\(agent of node-1\\)`, 'm'), r.stdout);
    assert.match(r.stdout, /^verdict\s+ALLOW\s/m);
    const plain = JSON.parse(cli(['explain', 'plain/legacy', `${server}:8080`, '-o', 'json']).stdout) as Explanation;
    assert.equal(plain.node, 'node-1');
    assert.equal(plain.route.kind, 'direct');
    assert.equal(plain.endpoints[0].transport, 'TCP');
    const bad = cli(['explain', 'shop/client', 'server:80']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /ADDRESS:PORT "server:80" is not valid/);
  });

  it('a denied pair: explain names the denying policy (the data path denies it too)', async () => {
    const a = ambit(['apply', '-f', '-'], DENY_INTRUDER);
    assert.equal(a.code, 0, a.stdout + a.stderr + hint());
    let x: Explanation | undefined;
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const r = cli(['explain', 'shop/intruder', `${vip}:80`, '-o', 'json']);
      assert.equal(r.code, 0, r.stderr + hint());
      x = JSON.parse(r.stdout) as Explanation;
      if (x.verdict === 'deny') break;
      await sleep(250);
    }
    assert.equal(x?.verdict, 'deny', JSON.stringify(x, null, 2));
    assert.equal(x.endpoints[0].decidedBy, 'shop/deny-intruder');
    const text = cli(['explain', 'shop/intruder', `${vip}:80`]).stdout;
    assert.match(text, /DENY\s+shop\/deny-intruder\s+matches rule 0\s+<- decides/, text);
    assert.match(text, /^verdict\s+DENY\s+.*shop\/deny-intruder/m, text);
    // The client is still allowed, and the policy is listed.
    assert.equal((JSON.parse(cli(['explain', 'shop/client', `${vip}:80`, '-o', 'json']).stdout) as Explanation).verdict, 'allow');
    assert.match(cli(['ztunnel-config', 'policies', '--node', 'node-2']).stdout, /^shop\s+deny-intruder\s+Deny\s+WorkloadSelector$/m);
    const denied = ambit(['exec', 'shop/intruder', '--', 'node', HTTP_GET, `http://${vip}/`, '--timeout', '3000']);
    assert.notEqual(denied.code, 0, 'the data path denies what explain says it denies');
  });

  it('STRICT mTLS: explain says plaintext from a pod outside the mesh is refused, naming the PeerAuthentication', async () => {
    const a = ambit(['apply', '-f', '-'], STRICT);
    assert.equal(a.code, 0, a.stdout + a.stderr + hint());
    let x: Explanation | undefined;
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      x = JSON.parse(cli(['explain', 'plain/legacy', `${vip}:80`, '-o', 'json']).stdout) as Explanation;
      if (x.verdict === 'deny') break;
      await sleep(250);
    }
    assert.equal(x?.verdict, 'deny', JSON.stringify(x, null, 2));
    assert.equal(x.endpoints[0].decidedBy, 'shop/strict');
    assert.deepEqual(x.endpoints[0].mtls, { mode: 'STRICT', policy: 'shop/strict' });
    assert.match(cli(['ztunnel-config', 'policies', '--node', 'node-1']).stdout, /^shop\s+strict\s+STRICT\s+Namespace\s+None$/m);
    const refused = ambit(['exec', 'plain/legacy', '--', 'node', HTTP_GET, `http://${vip}/`, '--timeout', '3000']);
    assert.notEqual(refused.code, 0, 'the data path refuses it too');
  });

  it('/logging shows and changes levels at run time', async () => {
    const target = { label: 'node-1', host: '127.0.0.1', port: 15000, netns: `/run/netns/${INSTANCE}-node-1` };
    const before = await adminRequest<{ level: string; components: Record<string, string> }>(target, '/logging');
    assert.equal(before.level, 'info');
    const after = await adminRequest<{ level: string; components: Record<string, string> }>(target, '/logging?level=debug,access:off', 'POST');
    assert.equal(after.level, 'debug');
    assert.equal(after.components.access, 'off');
    await assert.rejects(adminRequest(target, '/logging?level=loud', 'POST'), /bad log level "loud"/);
    const back = await adminRequest<{ level: string }>(target, '/logging?level=info,access:info', 'POST');
    assert.equal(back.level, 'info');
  });
});
