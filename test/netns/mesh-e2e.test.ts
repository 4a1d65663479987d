/**
 * The L4 mesh end to end, on a two-node local mesh (issue "L4 data plane", "Done means"):
 * cross-node and same-node meshed calls over HBONE with the client's pod IP preserved and nothing
 * in clear on the node link; non-mesh <-> mesh in both directions; an address outside the mesh;
 * pod deletion; an agent restart. Debug a failure: `AMBIT_LOCAL_INSTANCE=<instance> bin/ambit local
 * get pods -A -o wide`, logs in /run/ambit/<instance>/logs (the test prints the instance).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ambitLocal, HTTP_GET, newInstance, sweepLeftovers } from './local-helpers.ts';

const INSTANCE = newInstance();
const STATE = `/run/ambit/${INSTANCE}`;
const hint = () => `\n(instance ${INSTANCE}; logs in ${STATE}/logs; enter a pod: AMBIT_LOCAL_INSTANCE=${INSTANCE} bin/ambit local exec NS/POD -- sh)`;
const ambit = (args: string[], input?: string) => ambitLocal(INSTANCE, args, input);
const sh = (cmd: string, args: string[]) => spawnSync(cmd, args, { encoding: 'utf8' }).stdout ?? '';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const MANIFESTS = `
apiVersion: v1
kind: Namespace
metadata: { name: mesh, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Pod
metadata: { name: server, namespace: mesh, labels: { app: server, version: v7 } }
spec:
  nodeName: node-2
  serviceAccountName: server-sa
  containers: [{ name: echo, image: ambit/echo, ports: [{ containerPort: 8080 }] }]
---
apiVersion: v1
kind: Service
metadata: { name: server, namespace: mesh }
spec: { selector: { app: server }, ports: [{ name: http, port: 80, targetPort: 8080 }] }
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: mesh, labels: { app: client } }
spec: { nodeName: node-1, serviceAccountName: client-sa, containers: [{ name: sleep, image: ambit/sleep }] }
---
apiVersion: v1
kind: Pod
metadata: { name: neighbour, namespace: mesh, labels: { app: neighbour } }
spec: { nodeName: node-2, serviceAccountName: neighbour-sa, containers: [{ name: sleep, image: ambit/sleep }] }
---
apiVersion: v1
kind: Namespace
metadata: { name: plain }
---
apiVersion: v1
kind: Pod
metadata: { name: legacy, namespace: plain }
spec: { nodeName: node-1, containers: [{ name: sleep, image: ambit/sleep }] }
---
apiVersion: v1
kind: Pod
metadata: { name: plainsrv, namespace: plain, labels: { app: plainsrv } }
spec: { nodeName: node-2, containers: [{ name: echo, image: ambit/echo, ports: [{ containerPort: 8080 }] }] }
`;

const OUTSIDE_SERVER = `require('node:http').createServer((q, s) => s.end(JSON.stringify({ pod: 'outside', sourceIp: q.socket.remoteAddress, path: q.url })))
  .listen(0, process.argv[1], function () { process.stdout.write(String(this.address().port)); });`;

/** Sends bytes that are not TLS, then a TLS handshake without a client certificate, to ip:15008. */
const GARBAGE_CLIENT = `const net = require('node:net'), tls = require('node:tls'); const ip = process.argv[1];
const s = net.connect(15008, ip, () => s.write(Buffer.from('GET / HTTP/1.1\\r\\n\\r\\n\\x16\\x03\\x01\\xff\\xff garbage')));
s.on('error', () => {}); s.on('close', () => { console.log('garbage: closed');
  const t = tls.connect({ host: ip, port: 15008, rejectUnauthorized: false, ALPNProtocols: ['h2'] });
  t.on('secureConnect', () => t.write('x')); t.on('error', () => {}); t.on('close', () => console.log('no client cert: refused')); });`;

interface PodJson { metadata: { name: string; namespace: string; uid: string; annotations: Record<string, string> }; status: { podIP: string } }
interface Echo { pod: string; namespace: string; version: string; sourceIp: string; path: string }

let pods: PodJson[] = [];
let vip = '';
const pod = (key: string) => {
  const p = pods.find((x) => `${x.metadata.namespace}/${x.metadata.name}` === key);
  assert.ok(p, `pod ${key} exists${hint()}`);
  return p;
};

/** One HTTP GET from inside a pod; retried while the mesh config is still reaching the agents. */
async function get(from: string, url: string, patienceMs = 15_000): Promise<Echo> {
  const deadline = Date.now() + patienceMs;
  for (;;) {
    const r = ambit(['exec', from, '--', 'node', HTTP_GET, url, '--timeout', '3000']);
    if (r.code === 0) return JSON.parse(r.stdout.trim().split('\n')[0]) as Echo;
    if (Date.now() > deadline) assert.fail(`GET ${url} from ${from} failed: ${r.stderr}${hint()}`);
    await sleep(250);
  }
}

describe(`mesh end to end (instance ${INSTANCE})`, () => {
  before(() => {
    sweepLeftovers();
    const up = ambit(['up', '--nodes', '2']);
    assert.equal(up.code, 0, up.stdout + up.stderr + hint());
    const a = ambit(['apply', '-f', '-'], MANIFESTS);
    assert.equal(a.code, 0, a.stdout + a.stderr + hint());
    pods = (JSON.parse(ambit(['get', 'pods', '-A', '-o', 'json']).stdout) as { items: PodJson[] }).items;
    vip = (JSON.parse(ambit(['get', 'services', '-n', 'mesh', '-o', 'json']).stdout) as { items: { spec: { clusterIP: string } }[] }).items[0].spec.clusterIP;
  });
  after(() => { ambit(['down']); });

  it('cross-node: meshed client -> meshed service over HBONE; client IP kept; only TLS on the node link; identity recorded', async () => {
    await get('mesh/client', `http://${vip}/warm-up`); // config has reached both agents
    const marker = `ambit-marker-${randomBytes(6).toString('hex')}`;
    const capture = spawn('tcpdump', ['-i', `${INSTANCE}0`, '-n', '-l', '--immediate-mode', '-A', '-s', '0', 'tcp'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let seen = '';
    capture.stdout.on('data', (d: Buffer) => { seen += d.toString('latin1'); });
    await new Promise<void>((resolve) => capture.stderr.once('data', () => resolve())); // "listening on ..."
    let reply: Echo;
    try {
      reply = await get('mesh/client', `http://${vip}/${marker}`);
      await sleep(300);
    } finally {
      capture.kill('SIGINT');
      await new Promise((r) => capture.once('exit', r));
    }
    assert.equal(reply.pod, 'server');
    assert.equal(reply.version, 'v7');
    assert.equal(reply.path, `/${marker}`);
    assert.equal(reply.sourceIp, pod('mesh/client').status.podIP, 'the server sees the client pod IP');
    assert.match(seen, new RegExp(`${pod('mesh/server').status.podIP}\\.15008`), `the capture saw the HBONE connection${hint()}`);
    assert.ok(!seen.includes(marker), 'the marker never crosses the node link in clear');
    const agentLog = readFileSync(join(STATE, 'logs', 'agent-node-2.log'), 'utf8');
    assert.match(agentLog, /spiffe:\/\/cluster\.local\/ns\/mesh\/sa\/client-sa/, `node-2's agent recorded the client identity${hint()}`);
  });

  it('same node: meshed client -> meshed service', async () => {
    const reply = await get('mesh/neighbour', `http://${vip}/`);
    assert.equal(reply.pod, 'server');
    assert.equal(reply.sourceIp, pod('mesh/neighbour').status.podIP);
  });

  it('non-mesh client -> meshed service (PERMISSIVE)', async () => {
    const reply = await get('plain/legacy', `http://${vip}/`);
    assert.equal(reply.pod, 'server');
    assert.equal(reply.sourceIp, pod('plain/legacy').status.podIP);
  });

  it('meshed client -> non-mesh pod, and -> an address outside the mesh', async () => {
    const reply = await get('mesh/client', `http://${pod('plain/plainsrv').status.podIP}:8080/`);
    assert.equal(reply.pod, 'plainsrv');
    assert.equal(reply.sourceIp, pod('mesh/client').status.podIP);

    const hostIp = sh('ip', ['-4', '-o', 'addr', 'show', 'dev', `${INSTANCE}0`]).match(/inet (\S+)\//)?.[1];
    assert.ok(hostIp, `the host side of the bridge has an address${hint()}`);
    // The outside server runs in its own process: this one blocks in spawnSync during `exec`.
    const outside = spawn(process.execPath, ['-e', OUTSIDE_SERVER, hostIp], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const port = await new Promise<number>((resolve) => outside.stdout.once('data', (d: Buffer) => resolve(Number(d.toString()))));
      const r = await get('mesh/client', `http://${hostIp}:${port}/x`);
      assert.equal(r.pod, 'outside');
      assert.equal(r.sourceIp, pod('mesh/client').status.podIP);
    } finally {
      outside.kill();
    }
  });

  it('garbage and handshakes without a client certificate on 15008 do not take the agent down', async () => {
    const agentPid = () => sh('pgrep', ['-f', `agent --node node-2 .*${STATE}/`]).trim();
    const before = agentPid();
    const target = `${pod('mesh/server').status.podIP}`;
    const r = ambit(['exec', 'plain/legacy', '--', 'node', '-e', GARBAGE_CLIENT, target]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /garbage: closed/);
    assert.match(r.stdout, /no client cert: refused/);
    assert.equal(agentPid(), before, 'the same agent process still runs');
    const reply = await get('mesh/client', `http://${vip}/still-fine`);
    assert.equal(reply.pod, 'server');
  });

  it('each agent answers readiness on :15021', async () => {
    const nodes = (JSON.parse(ambit(['get', 'nodes', '-o', 'json']).stdout) as { items: { status: { addresses: { type: string; address: string }[] } }[] }).items;
    assert.equal(nodes.length, 2);
    for (const n of nodes) {
      const ip = n.status.addresses.find((a) => a.type === 'InternalIP')?.address;
      assert.ok(ip, 'node has an InternalIP');
      const res = await fetch(`http://${ip}:15021/healthz/ready`);
      assert.equal(res.status, 200);
    }
  });

  it('an agent restart: new connections work again within seconds', async () => {
    const pids = sh('pgrep', ['-f', `agent --node node-2 .*${STATE}/`]).trim().split('\n').filter(Boolean);
    assert.equal(pids.length, 1, `one agent process for node-2${hint()}`);
    const started = Date.now();
    process.kill(Number(pids[0]), 'SIGKILL');
    const reply = await get('mesh/client', `http://${vip}/after-restart`, 20_000);
    const took = Date.now() - started;
    assert.equal(reply.sourceIp, pod('mesh/client').status.podIP);
    assert.ok(took < 20_000, `took ${took} ms`);
    process.stdout.write(`# agent restart: traffic back after ${took} ms\n`);
  });

  it('deleting a pod removes its rules, listeners and records', async () => {
    const n = pod('mesh/neighbour');
    const netns = n.metadata.annotations['local.ambit.dev/netns'];
    assert.ok(netns && sh('ip', ['netns', 'list']).includes(netns), `pod netns annotated and present${hint()}`);
    assert.match(sh('ip', ['netns', 'exec', netns, 'iptables-save']), /15001/);
    const record = join(STATE, 'nodes', 'node-2', 'pods', `${n.metadata.uid}.json`);
    assert.ok(existsSync(record), 'the agent recorded the pod');
    const d = ambit(['delete', '-f', '-'], 'apiVersion: v1\nkind: Pod\nmetadata: { name: neighbour, namespace: mesh }\n');
    assert.equal(d.code, 0, d.stderr);
    assert.ok(!sh('ip', ['netns', 'list']).includes(netns), 'netns removed');
    assert.ok(!existsSync(record), 'agent record removed');
    assert.match(readFileSync(join(STATE, 'logs', 'agent-node-2.log'), 'utf8'), /pod removed.*pod=mesh\/neighbour/);
  });

  it('down leaves nothing behind', () => {
    const r = ambit(['down']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sh('pgrep', ['-f', STATE]).trim(), '');
    assert.deepEqual(sh('ip', ['netns', 'list']).split('\n').filter((l) => l.startsWith(`${INSTANCE}-`)), []);
    assert.ok(!sh('ip', ['-o', 'link']).includes(`${INSTANCE}0`), 'bridge removed');
    assert.ok(!sh('iptables-save', []).includes(INSTANCE), 'host iptables clean');
    assert.equal(existsSync(STATE), false);
  });
});
