/**
 * Runtime enrollment on a two-node local mesh (issue 4, part 5): labelling a namespace ambient
 * enrolls its running pods without a restart (in-pod rules installed by the agent, listeners opened,
 * new connections over HBONE) while a plain connection opened before keeps working; removing a
 * pod's opt-out label enrolls that pod; removing the namespace label releases them all (rules gone,
 * listeners closed, new connections plain). Debug a failure: `AMBIT_LOCAL_INSTANCE=<instance>
 * bin/ambit local get pods -A -o wide`, logs in /run/ambit/<instance>/logs.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { AMBIT, ambitLocal, HTTP_GET, newInstance, sweepLeftovers } from './local-helpers.ts';

const INSTANCE = newInstance();
const STATE = `/run/ambit/${INSTANCE}`;
const hint = () => `\n(instance ${INSTANCE}; logs in ${STATE}/logs; enter a pod: AMBIT_LOCAL_INSTANCE=${INSTANCE} bin/ambit local exec NS/POD -- sh)`;
const ambit = (args: string[], input?: string) => ambitLocal(INSTANCE, args, input);
const sh = (cmd: string, args: string[]) => spawnSync(cmd, args, { encoding: 'utf8' }).stdout ?? '';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const namespace = (labelled: boolean) => `
apiVersion: v1
kind: Namespace
metadata: { name: apps${labelled ? ', labels: { istio.io/dataplane-mode: ambient }' : ''} }
`;
const optoutPod = (optedOut: boolean) => `
apiVersion: v1
kind: Pod
metadata: { name: optout, namespace: apps, labels: { app: optout${optedOut ? ', istio.io/dataplane-mode: none' : ''} } }
spec: { nodeName: node-2, containers: [{ name: sleep, image: ambit/sleep }] }
`;
const MANIFESTS = namespace(false) + `---
apiVersion: v1
kind: Pod
metadata: { name: server, namespace: apps, labels: { app: server } }
spec:
  nodeName: node-2
  serviceAccountName: server-sa
  containers: [{ name: echo, image: ambit/echo, ports: [{ containerPort: 8080 }] }]
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: apps, labels: { app: client } }
spec: { nodeName: node-1, serviceAccountName: client-sa, containers: [{ name: sleep, image: ambit/sleep }] }
---` + optoutPod(true);

/** A keep-alive HTTP/1.1 connection that asks every 200 ms; prints "ok N" per answer, "closed" at the end. */
const LONG_LIVED = `const s = require('node:net').connect(8080, process.argv[1], () => { console.log('connected ' + s.localPort); ask(); });
let n = 0; const ask = () => s.write('GET /long HTTP/1.1\\r\\nHost: server\\r\\n\\r\\n');
s.on('data', (d) => { for (const _ of d.toString().matchAll(/HTTP\\/1\\.1 200/g)) { n++; console.log('ok ' + n); } setTimeout(ask, 200); });
s.on('error', (e) => console.log('error ' + e.message)); s.on('close', () => { console.log('closed'); process.exit(1); });`;

interface PodJson { metadata: { name: string; namespace: string; uid: string; annotations: Record<string, string> }; status: { podIP: string } }
let pods: PodJson[] = [];
const pod = (name: string) => {
  const p = pods.find((x) => x.metadata.namespace === 'apps' && x.metadata.name === name);
  assert.ok(p, `pod apps/${name} exists${hint()}`);
  return p;
};
const netnsOf = (name: string) => pod(name).metadata.annotations['local.ambit.dev/netns']!;
const inPod = (name: string, cmd: string, args: string[]) => sh('ip', ['netns', 'exec', netnsOf(name), cmd, ...args]);
const hasRules = (name: string) => inPod(name, 'iptables-save', []).includes('AMBIT_');
const meshPorts = (name: string) => [...inPod(name, 'ss', ['-Hltn']).matchAll(/:(1500[168])\s/g)].map((m) => Number(m[1])).sort();
/** The pod's netns inode and processes; `exec` adds processes of its own, so compare with `notRestarted`. */
const identityOf = (name: string) => ({ inode: statSync(`/run/netns/${netnsOf(name)}`).ino, pids: sh('ip', ['netns', 'pids', netnsOf(name)]).trim().split('\n').filter(Boolean) });
function notRestarted(name: string, was: { inode: number; pids: string[] }): void {
  const now = identityOf(name);
  assert.equal(now.inode, was.inode, `${name}: same netns`);
  assert.ok(was.pids.length > 0 && was.pids.every((p) => now.pids.includes(p)), `${name}: the same processes still run (${was.pids} -> ${now.pids})${hint()}`);
}
const agentLog = () => readFileSync(join(STATE, 'logs', 'agent-node-2.log'), 'utf8');
/** Inbound connections on the server's agent that carried the client's SPIFFE identity (HBONE). */
const hboneFromClient = () => agentLog().split('\n').filter((l) => l.includes('connection complete') && l.includes('spiffe://cluster.local/ns/apps/sa/client-sa')).length;

function get(url: string): { ok: boolean; body: string; err: string } {
  const r = ambit(['exec', 'apps/client', '--', 'node', HTTP_GET, url, '--timeout', '3000']);
  return { ok: r.code === 0, body: r.stdout, err: r.stderr };
}

async function until(what: string, cond: () => boolean, patienceMs = 10_000): Promise<number> {
  const started = Date.now();
  while (!cond()) {
    if (Date.now() - started > patienceMs) assert.fail(`${what}: not within ${patienceMs} ms${hint()}`);
    await sleep(200);
  }
  return Date.now() - started;
}

describe(`runtime enrollment (instance ${INSTANCE})`, () => {
  let longLived: ChildProcess | undefined;
  let longOut = '';
  const answers = () => [...longOut.matchAll(/^ok (\d+)$/gm)].length;
  let before0: Record<string, { inode: number; pids: string[] }> = {};

  before(async () => {
    sweepLeftovers();
    const up = ambit(['up', '--nodes', '2']);
    assert.equal(up.code, 0, up.stdout + up.stderr + hint());
    const a = ambit(['apply', '-f', '-'], MANIFESTS);
    assert.equal(a.code, 0, a.stdout + a.stderr + hint());
    pods = (JSON.parse(ambit(['get', 'pods', '-n', 'apps', '-o', 'json']).stdout) as { items: PodJson[] }).items;
    before0 = Object.fromEntries(['server', 'client', 'optout'].map((n) => [n, identityOf(n)]));
  });
  after(() => {
    longLived?.kill();
    ambit(['down']);
  });

  it('a plain namespace: no rules, no listeners, plain traffic; a long-lived connection opens', async () => {
    for (const p of ['server', 'client', 'optout']) {
      assert.equal(hasRules(p), false, `no in-pod rules in ${p}${hint()}`);
      assert.deepEqual(meshPorts(p), [], `no mesh listeners in ${p}`);
    }
    const ip = pod('server').status.podIP;
    const r = get(`http://${ip}:8080/plain`);
    assert.ok(r.ok, r.err + hint());
    longLived = spawn(AMBIT, ['local', 'exec', 'apps/client', '--', 'node', '-e', LONG_LIVED, ip],
      { env: { ...process.env, AMBIT_LOCAL_INSTANCE: INSTANCE }, stdio: ['ignore', 'pipe', 'pipe'] });
    longLived.stdout!.on('data', (d: Buffer) => { longOut += d.toString(); });
    longLived.stderr!.on('data', (d: Buffer) => { longOut += d.toString(); });
    await until('the long-lived connection answers', () => answers() >= 3);
    assert.equal(hboneFromClient(), 0, 'nothing over HBONE yet');
  });

  it('labelling the namespace enrolls the running pods: HBONE within seconds, no restart, the old connection lives', async () => {
    const a = ambit(['apply', '-f', '-'], namespace(true));
    assert.equal(a.code, 0, a.stdout + a.stderr);
    const took = await until('server and client enrolled (rules and listeners)', () =>
      hasRules('server') && hasRules('client') && meshPorts('server').length === 3 && meshPorts('client').length === 3);
    process.stdout.write(`# namespace label -> pods enrolled in ${took} ms\n`);
    const ip = pod('server').status.podIP;
    await until('a new connection is carried over HBONE', () => {
      const r = get(`http://${ip}:8080/meshed`);
      return r.ok && JSON.parse(r.body.trim().split('\n')[0]!).sourceIp === pod('client').status.podIP && hboneFromClient() > 0;
    });
    assert.equal(hasRules('optout'), false, 'the opted-out pod stays outside');
    assert.deepEqual(meshPorts('optout'), []);
    for (const p of ['server', 'client']) notRestarted(p, before0[p]!);
    const n = answers();
    await until('the long-lived plain connection still answers', () => answers() >= n + 3);
    assert.doesNotMatch(longOut, /closed|error/);
    assert.match(agentLog(), /pod enrolled at run time.*pod=apps\/server/);
  });

  it('removing the pod opt-out label enrolls that pod without a restart', async () => {
    const a = ambit(['apply', '-f', '-'], optoutPod(false));
    assert.equal(a.code, 0, a.stdout + a.stderr);
    await until('optout enrolled', () => hasRules('optout') && meshPorts('optout').length === 3);
    notRestarted('optout', before0.optout!);
  });

  it('removing the namespace label releases the pods: rules gone, listeners closed, new connections plain', async () => {
    const a = ambit(['apply', '-f', '-'], namespace(false));
    assert.equal(a.code, 0, a.stdout + a.stderr);
    const took = await until('all pods released', () =>
      ['server', 'client', 'optout'].every((p) => !hasRules(p) && meshPorts(p).length === 0));
    process.stdout.write(`# namespace label removed -> pods released in ${took} ms\n`);
    for (const p of ['server', 'client', 'optout']) {
      assert.doesNotMatch(inPod(p, 'iptables-save', []), /AMBIT|1500[168]/, `${p}: iptables clean${hint()}`);
      assert.doesNotMatch(inPod(p, 'ip', ['rule']), /lookup 100/, `${p}: no policy routing`);
      notRestarted(p, before0[p]!);
    }
    const hbone = hboneFromClient();
    const ip = pod('server').status.podIP;
    const r = get(`http://${ip}:8080/plain-again`);
    assert.ok(r.ok, r.err + hint());
    assert.equal(JSON.parse(r.body.trim().split('\n')[0]!).sourceIp, pod('client').status.podIP);
    await sleep(300);
    assert.equal(hboneFromClient(), hbone, 'the new connection did not go over HBONE');
    const n = answers();
    await until('the long-lived plain connection still answers', () => answers() >= n + 3);
    assert.doesNotMatch(longOut, /closed|error/);
    assert.match(agentLog(), /pod released at run time.*pod=apps\/server/);
  });

  it('down leaves nothing behind', () => {
    longLived?.kill();
    const r = ambit(['down']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sh('pgrep', ['-f', STATE]).trim(), '');
    assert.deepEqual(sh('ip', ['netns', 'list']).split('\n').filter((l) => l.startsWith(`${INSTANCE}-`)), []);
  });
});
