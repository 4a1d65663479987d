/**
 * `ambit local` without the mesh (--no-mesh): real node and pod network namespaces, real CNI plugins,
 * real kube-proxy rules. Each run uses its own instance (AMBIT_LOCAL_INSTANCE) and removes it in after().
 * Debug a failure: ip netns list | grep <instance>; ip netns exec <instance>-node-1 iptables-save -t nat
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { sweepLeftovers } from './local-helpers.ts';

/** Running (a zombie waiting for its reaper counts as gone). */
function alive(pid: number): boolean {
  try { return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')); } catch { return false; }
}

const ROOT = resolve(import.meta.dirname, '..', '..');
const AMBIT = join(ROOT, 'bin', 'ambit');
const HTTP_GET = join(ROOT, 'src', 'local', 'apps', 'http-get.ts');
const INSTANCE = `ambt-${randomBytes(3).toString('hex').slice(0, 5)}`;
const STATE = `/run/ambit/${INSTANCE}`;

function ambit(args: string[], input?: string): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(AMBIT, ['local', ...args], { env: { ...process.env, AMBIT_LOCAL_INSTANCE: INSTANCE }, input, encoding: 'utf8', timeout: 180_000 });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}
function sh(cmd: string, args: string[]): string {
  return spawnSync(cmd, args, { encoding: 'utf8' }).stdout ?? '';
}
function hint(): string {
  return `\n(instance ${INSTANCE}: ip netns list | grep ${INSTANCE}; logs in ${STATE}/logs)`;
}

interface PodJson { metadata: { name: string; annotations?: Record<string, string> }; spec: { nodeName: string }; status: { phase: string; podIP: string; hostIP: string; podIPs: { ip: string }[]; conditions: { type: string; status: string }[] } }

const MANIFESTS = {
  '1-ns.yaml': `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: t1\n`,
  '2-echo.yaml': `apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: t1}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo, version: v7}}
    spec:
      containers: [{name: echo, image: ambit/echo, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: t1}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
`,
  '3-client.yaml': `apiVersion: v1
kind: Pod
metadata: {name: client, namespace: t1}
spec:
  nodeName: node-1
  containers: [{name: c, image: ambit/sleep}]
`,
  '4-bad.yaml': `apiVersion: v1\nkind: Pod\nmetadata: {name: broken\n`,
  '5-unsupported.yaml': `apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db, namespace: t1}\nspec: {}\n`,
};

describe(`ambit local --no-mesh (instance ${INSTANCE})`, () => {
  let dir = '';
  before(() => {
    sweepLeftovers();
    ambit(['down']); // leftovers of an interrupted run with the same name
    dir = mkdtempSync(join(tmpdir(), 'ambt-local-'));
    for (const [f, text] of Object.entries(MANIFESTS)) writeFileSync(join(dir, f), text);
  });
  after(() => {
    const r = ambit(['down']);
    if (r.code !== 0) process.stderr.write(`down failed: ${r.stderr}\n`);
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses to start without root, saying what is needed', (t) => {
    // Runs the real CLI as "nobody": that needs the checkout to be readable by other users.
    const probe = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'test', '-r', join(ROOT, 'src', 'cli', 'local.ts')]);
    if (probe.status !== 0) {
      t.skip(`the checkout ${ROOT} is not readable by other users, so the CLI cannot run as nobody here`);
      return;
    }
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', AMBIT, 'local', 'up', '--no-mesh'],
      { env: { ...process.env, AMBIT_LOCAL_INSTANCE: INSTANCE }, encoding: 'utf8' });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /needs root.*sudo.*LOCAL_NEEDS_ROOT/s);
    assert.equal(existsSync(STATE), false);
  });

  it('starts, and a second up sees it running', () => {
    const r = ambit(['up', '--no-mesh', '--nodes', '2']);
    assert.equal(r.code, 0, r.stderr + hint());
    assert.ok(sh('ip', ['link', 'show', `${INSTANCE}0`]).includes('state UP'), 'bridge is up');
    const again = ambit(['up', '--no-mesh']);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /already running/);
  });

  it('applies a directory: good manifests run, the bad file and the unsupported kind are reported', () => {
    const r = ambit(['apply', '-f', dir]);
    assert.notEqual(r.code, 0, 'exit code reports the failures');
    assert.match(r.stderr, /4-bad\.yaml: invalid YAML/);
    assert.match(r.stderr, /5-unsupported\.yaml: .*StatefulSet is not supported/);
    assert.match(r.stdout, /deployment\.apps\/echo \(t1\) created/);
    assert.match(r.stdout, /pod\/client \(t1\) created/);
  });

  let pods: PodJson[] = [];
  it('pods have IPs, nodes, Ready status; deployment pods spread over both nodes', () => {
    const r = ambit(['get', 'pods', '-n', 't1', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    pods = (JSON.parse(r.stdout) as { items: PodJson[] }).items;
    assert.equal(pods.length, 3, r.stdout);
    for (const p of pods) {
      assert.equal(p.status.phase, 'Running', `${p.metadata.name}${hint()}`);
      assert.match(p.status.podIP, /^10\.244\.\d+\.\d+$/);
      assert.deepEqual(p.status.podIPs, [{ ip: p.status.podIP }]);
      assert.ok(p.status.conditions.some((c) => c.type === 'Ready' && c.status === 'True'), p.metadata.name);
      assert.ok(sh('ip', ['netns', 'list']).includes(p.metadata.annotations!['local.ambit.dev/netns']));
    }
    const echo = pods.filter((p) => p.metadata.name.startsWith('echo-'));
    assert.equal(echo.length, 2);
    for (const p of echo) assert.match(p.metadata.name, /^echo-[a-z0-9]{5}$/);
    assert.deepEqual(new Set(echo.map((p) => p.spec.nodeName)), new Set(['node-1', 'node-2']));
    assert.equal(pods.find((p) => p.metadata.name === 'client')!.spec.nodeName, 'node-1');
  });

  it('the ClusterIP reaches both echo pods (same node and cross node) with the client IP as source', () => {
    const svc = JSON.parse(ambit(['get', 'services', '-n', 't1', '-o', 'json']).stdout) as { items: { spec: { clusterIP: string } }[] };
    const vip = svc.items[0].spec.clusterIP;
    assert.match(vip, /^10\.96\.\d+\.\d+$/);
    const r = ambit(['exec', 't1/client', '--', 'node', HTTP_GET, `http://${vip}/hello`, '--count', '30']);
    assert.equal(r.code, 0, r.stderr + hint());
    const replies = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { pod: string; namespace: string; version: string; sourceIp: string; path: string });
    assert.equal(replies.length, 30);
    const client = pods.find((p) => p.metadata.name === 'client')!;
    const echoNames = pods.filter((p) => p.metadata.name.startsWith('echo-')).map((p) => p.metadata.name).sort();
    assert.deepEqual([...new Set(replies.map((x) => x.pod))].sort(), echoNames, 'both endpoints answered');
    for (const x of replies) {
      assert.equal(x.sourceIp, client.status.podIP);
      assert.equal(x.namespace, 't1');
      assert.equal(x.version, 'v7');
      assert.equal(x.path, '/hello');
    }
  });

  it('a pod reaches itself through its service (hairpin)', () => {
    const vip = (JSON.parse(ambit(['get', 'svc', '-n', 't1', '-o', 'json']).stdout) as { items: { spec: { clusterIP: string } }[] }).items[0].spec.clusterIP;
    const echo = pods.find((p) => p.metadata.name.startsWith('echo-'))!;
    const r = ambit(['exec', `t1/${echo.metadata.name}`, '--', 'node', HTTP_GET, `http://${vip}/`, '--count', '12']);
    assert.equal(r.code, 0, r.stderr + hint());
    const seen = new Set(r.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { pod: string }).pod));
    assert.ok(seen.has(echo.metadata.name), 'reached itself');
  });

  it('exec passes the exit code through', () => {
    assert.equal(ambit(['exec', 't1/client', '--', 'sh', '-c', 'exit 42']).code, 42);
    assert.equal(ambit(['exec', 't1/client', '--', 'true']).code, 0);
    assert.equal(ambit(['exec', 't1/nope', '--', 'true']).code, 1);
  });

  it('deleting a pod removes its netns; a deleted deployment pod is replaced', () => {
    const client = pods.find((p) => p.metadata.name === 'client')!;
    const netns = client.metadata.annotations!['local.ambit.dev/netns'];
    const r = ambit(['delete', '-f', join(dir, '3-client.yaml')]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!sh('ip', ['netns', 'list']).includes(netns), `${netns} removed`);
    assert.equal(ambit(['get', 'pods', '-n', 't1', '-o', 'json']).stdout.includes('"client"'), false);

    const victim = pods.find((p) => p.metadata.name.startsWith('echo-'))!;
    const d = ambit(['delete', '-f', '-'], `apiVersion: v1\nkind: Pod\nmetadata: {name: ${victim.metadata.name}, namespace: t1}\n`);
    assert.equal(d.code, 0, d.stderr);
    const now = (JSON.parse(ambit(['get', 'pods', '-n', 't1', '-o', 'json']).stdout) as { items: PodJson[] }).items;
    assert.equal(now.length, 2);
    assert.ok(!now.some((p) => p.metadata.name === victim.metadata.name));
  });

  it('down removes every netns, link, iptables chain, process and file', () => {
    const netns = sh('ip', ['netns', 'list']).split('\n').map((l) => l.split(' ')[0]).filter((n) => n.startsWith(`${INSTANCE}-`));
    const pids = netns.flatMap((n) => sh('ip', ['netns', 'pids', n]).split(/\s+/).filter(Boolean).map(Number));
    assert.ok(pids.length >= 2, `pod processes found: ${pids.join(',')}`);
    const r = ambit(['down']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sh('ip', ['netns', 'list']).split('\n').filter((l) => l.startsWith(`${INSTANCE}-`)).join(','), '');
    assert.equal(sh('ip', ['-o', 'link']).split('\n').filter((l) => l.includes(`${INSTANCE}0`) || l.includes(`${INSTANCE}n`)).join(','), '');
    assert.ok(!sh('iptables-save', []).includes(`AMBIT-FWD-${INSTANCE}`));
    assert.equal(sh('pgrep', ['-f', STATE]).trim(), '');
    assert.equal(existsSync(STATE), false);
    for (const pid of pids) assert.ok(!alive(pid), `pid ${pid} is gone`);
    const again = ambit(['down']);
    assert.equal(again.code, 0, 'down is idempotent');
  });
});
