/**
 * The real control plane (etcd, kube-apiserver, kube-controller-manager built by
 * scripts/build-kube.sh): kubectl works against it, the controller-manager's controllers run
 * (service accounts, tokens, EndpointSlices, namespace deletion), and stopping it — or cleaning up
 * after the process that started it was killed — leaves no process behind.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { pidsMentioning } from '../../src/local/teardown.ts';
import { startKubeControlPlane, stopKubeControlPlane, type KubeControlPlane } from '../../src/local/kube/control-plane.ts';
import { readPids } from '../../src/local/kube/processes.ts';
import { eventually, kubectl, kubectlOk, newTestDir, sweepLeftovers } from './kube-helpers.ts';

const NODE = join(import.meta.dirname, '..', '..', 'node_modules', '.bin', 'node');

/** Running (a zombie waiting for its reaper counts as gone). */
function alive(pid: number): boolean {
  try { return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')); } catch { return false; }
}

describe('kube control plane', () => {
  let dir = '';
  let cp: KubeControlPlane | undefined;

  before(async () => {
    await sweepLeftovers();
    dir = newTestDir();
    cp = await startKubeControlPlane({ dir });
  });
  after(async () => {
    await cp?.stop();
    await stopKubeControlPlane(dir);
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves kubectl at the version we built', () => {
    const v = JSON.parse(kubectlOk(cp!, ['version', '-o', 'json'])) as { clientVersion: { gitVersion: string }; serverVersion: { gitVersion: string } };
    assert.equal(v.serverVersion.gitVersion, cp!.binaries.kubeVersion);
    assert.equal(v.clientVersion.gitVersion, cp!.binaries.kubeVersion);
    assert.match(kubectlOk(cp!, ['auth', 'whoami', '-o', 'jsonpath={.status.userInfo.username}']), /^kubernetes-admin$/);
  });

  it('runs the service account and token controllers', async () => {
    kubectlOk(cp!, ['create', 'namespace', 'kt']);
    kubectlOk(cp!, ['-n', 'kt', 'create', 'serviceaccount', 'app']);
    // The serviceaccount controller adds `default` to every new namespace.
    await eventually('serviceaccount kt/default', () => kubectl(cp!, ['-n', 'kt', 'get', 'serviceaccount', 'default']).code === 0 ? true : undefined);
    // The root-CA publisher puts our CA into every namespace.
    const caData = await eventually('configmap kt/kube-root-ca.crt', () => {
      const r = kubectl(cp!, ['-n', 'kt', 'get', 'configmap', 'kube-root-ca.crt', '-o', 'jsonpath={.data.ca\\.crt}']);
      return r.code === 0 && r.stdout.includes('BEGIN CERTIFICATE') ? r.stdout : undefined;
    });
    assert.ok(caData.length > 100);
    // The token controller fills a legacy token Secret (signed with --service-account-private-key-file).
    kubectlOk(cp!, ['apply', '-f', '-'], `apiVersion: v1
kind: Secret
metadata: {name: app-token, namespace: kt, annotations: {kubernetes.io/service-account.name: app}}
type: kubernetes.io/service-account-token
`);
    const legacy = await eventually('token in secret kt/app-token', () => {
      const r = kubectl(cp!, ['-n', 'kt', 'get', 'secret', 'app-token', '-o', 'jsonpath={.data.token}']);
      return r.code === 0 && r.stdout !== '' ? Buffer.from(r.stdout, 'base64').toString() : undefined;
    });
    // Both that token and a TokenRequest token authenticate as the service account.
    const bound = kubectlOk(cp!, ['-n', 'kt', 'create', 'token', 'app']).trim();
    for (const token of [legacy, bound]) {
      // No kubeconfig, so no client certificate: the token alone authenticates.
      const who = kubectlOk({ kubeconfig: '/dev/null', kubectlDir: cp!.kubectlDir }, ['--server', cp!.server, '--certificate-authority', cp!.pki.caCert,
        '--token', token, 'auth', 'whoami', '-o', 'jsonpath={.status.userInfo.username}']);
      assert.equal(who, 'system:serviceaccount:kt:app');
    }
  });

  it('builds EndpointSlices for Services', async () => {
    kubectlOk(cp!, ['apply', '-f', '-'], `apiVersion: v1
kind: Service
metadata: {name: web, namespace: kt}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: kt}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: ext, namespace: kt}
subsets: [{addresses: [{ip: 192.0.2.10}], ports: [{port: 80}]}]
`);
    type Slices = { items: { metadata: { labels: Record<string, string> }; endpoints?: { addresses: string[] }[] }[] };
    const slices = (svc: string) => (JSON.parse(kubectlOk(cp!, ['-n', 'kt', 'get', 'endpointslices', '-l', `kubernetes.io/service-name=${svc}`, '-o', 'json'])) as Slices).items;
    // The endpointslice controller (selector, no pods yet: an empty slice) ...
    const web = await eventually('EndpointSlice of kt/web', () => slices('web')[0]);
    assert.equal(web.metadata.labels['endpointslice.kubernetes.io/managed-by'], 'endpointslice-controller.k8s.io');
    // ... and the mirroring controller (no selector, a hand-made Endpoints).
    const ext = await eventually('mirrored EndpointSlice of kt/ext', () => slices('ext').find((s) => (s.endpoints ?? []).length > 0));
    assert.deepEqual(ext.endpoints!.map((e) => e.addresses[0]), ['192.0.2.10']);
  });

  it('deletes namespaces (namespace controller, garbage collector)', async () => {
    kubectlOk(cp!, ['delete', 'namespace', 'kt', '--wait=false']);
    await eventually('namespace kt to be gone', () => kubectl(cp!, ['get', 'namespace', 'kt']).code !== 0 ? true : undefined, 90_000);
  });

  it('stops with nothing left behind', async () => {
    const pids = readPids(dir).map((p) => p.pid);
    assert.equal(pids.length, 3, 'etcd, kube-apiserver, kube-controller-manager');
    await cp!.stop();
    cp = undefined;
    for (const pid of pids) assert.ok(!alive(pid), `pid ${pid} is gone`);
    assert.deepEqual(pidsMentioning(dir + '/'), []);
  });
});

describe('kube control plane after its starter crashed', () => {
  let dir = '';
  after(async () => {
    await stopKubeControlPlane(dir);
    rmSync(dir, { recursive: true, force: true });
  });

  it('stopKubeControlPlane removes the processes of a SIGKILLed starter', async () => {
    dir = newTestDir();
    const child = spawn(NODE, [join(import.meta.dirname, 'control-plane-child.ts'), dir], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    await eventually('the child to report ready', () => {
      if (child.exitCode !== null) throw new Error(`the child exited with ${child.exitCode} before it was ready`);
      return out.includes('ready') ? true : undefined;
    }, 150_000);
    const pids = readPids(dir).map((p) => p.pid);
    assert.equal(pids.length, 3);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    for (const pid of pids) assert.ok(alive(pid), 'the control plane outlives its starter');
    await stopKubeControlPlane(dir);
    for (const pid of pids) assert.ok(!alive(pid), `pid ${pid} is gone`);
    assert.deepEqual(pidsMentioning(dir + '/'), []);
    assert.ok(existsSync(join(dir, 'pki', 'ca.crt')));
  });
});
