/**
 * ambit-cni on a real cluster reads a starting pod's labels and its namespace's labels from the API
 * server, with the kubeconfig that `ambit cni-install --plugin-kubeconfig` writes from the
 * installer's ServiceAccount (cni/rbac.yaml: get on pods and namespaces). Checked against a real
 * kube-apiserver: enrollment decisions, the least-privilege RBAC (another ServiceAccount is
 * refused), an unreachable API server failing the ADD of an ambient pod, token rotation rewriting
 * the kubeconfig, and uninstall removing it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCni } from '../../src/cni/plugin.ts';
import { KubeMetadataSource } from '../../src/cni/kube-metadata.ts';
import { enrollment } from '../../src/cni/pod-metadata.ts';
import { CniInstaller } from '../../src/cni/installer/installer.ts';
import { pluginKubeconfig, writePluginKubeconfig } from '../../src/cni/installer/plugin-kubeconfig.ts';
import { startKubeControlPlane, stopKubeControlPlane, type KubeControlPlane } from '../../src/local/kube/control-plane.ts';
import { isAmbitError } from '../../src/shared/errors.ts';
import { kubectlOk, newTestDir, sweepLeftovers } from './kube-helpers.ts';

const RBAC = join(import.meta.dirname, '..', '..', 'cni', 'rbac.yaml');
const BRIDGE_CONF = { cniVersion: '1.0.0', name: 'pods', plugins: [{ type: 'bridge', bridge: 'cni0', ipam: { type: 'host-local', subnet: '10.22.0.0/16' } }] };

async function rejectsWith(p: Promise<unknown>, code: string, text: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isAmbitError(err), `an AmbitError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.match(err.message, text);
    return true;
  });
}

describe('ambit-cni pod metadata from a real API server', () => {
  let dir = '';
  let cp: KubeControlPlane | undefined;
  let confDir = '';
  let installer: CniInstaller;
  let kubeconfigFile = '';
  const kubectl = (args: string[], input?: string) => kubectlOk(cp!, args, input);
  const token = (sa: string) => kubectl(['create', 'token', sa, '-n', 'ambit-system', '--duration=1h']).trim();

  before(async () => {
    await sweepLeftovers();
    dir = newTestDir();
    cp = await startKubeControlPlane({ dir: join(dir, 'kube') });
    kubectl(['create', 'namespace', 'ambit-system']);
    kubectl(['apply', '-n', 'ambit-system', '-f', RBAC]);
    kubectl(['create', 'serviceaccount', 'nobody', '-n', 'ambit-system']);
    kubectl(['apply', '-f', '-'], `
apiVersion: v1
kind: Namespace
metadata: {name: meshed, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Pod
metadata: {name: app, namespace: meshed}
spec: {serviceAccountName: default, automountServiceAccountToken: false, nodeName: n1, containers: [{name: c, image: none}]}
---
apiVersion: v1
kind: Pod
metadata: {name: opted-out, namespace: meshed, labels: {istio.io/dataplane-mode: none}}
spec: {automountServiceAccountToken: false, nodeName: n1, containers: [{name: c, image: none}]}
---
apiVersion: v1
kind: Pod
metadata: {name: app, namespace: plain}
spec: {automountServiceAccountToken: false, nodeName: n1, containers: [{name: c, image: none}]}
`);
    // What the installer pod would have mounted: its ServiceAccount token and the cluster CA.
    mkdirSync(join(dir, 'sa'));
    writeFileSync(join(dir, 'sa', 'token'), token('ambit-cni'));
    writeFileSync(join(dir, 'sa', 'ca.crt'), readFileSync(cp.pki.caCert));
    confDir = join(dir, 'net.d');
    mkdirSync(confDir);
    writeFileSync(join(confDir, '10-pods.conflist'), JSON.stringify(BRIDGE_CONF));
    mkdirSync(join(dir, 'bin'));
    installer = new CniInstaller({
      confDir, binDir: join(dir, 'bin'), plugin: { kind: 'shim', ambitRoot: join(import.meta.dirname, '..', '..') }, settings: { agentSocket: join(dir, 'no-agent.sock') },
      kubeconfig: pluginKubeconfig({ confDir, hostConfDir: confDir, server: cp.server, tokenFile: join(dir, 'sa', 'token'), caFile: join(dir, 'sa', 'ca.crt') }),
    });
    kubeconfigFile = join(confDir, 'ambit-cni.kubeconfig');
  });
  after(async () => {
    if (cp) await stopKubeControlPlane(cp.dir);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the installer writes a root-only kubeconfig and points the chained plugin entry at it', () => {
    const out = installer.installOnce();
    assert.equal(out.kubeconfigWritten, true);
    assert.equal(statSync(kubeconfigFile).mode & 0o777, 0o600);
    const conf = JSON.parse(readFileSync(join(confDir, '10-pods.conflist'), 'utf8')) as { plugins: { type: string; kubeconfig?: string }[] };
    assert.equal(conf.plugins.at(-1)!.type, 'ambit-cni');
    assert.equal(conf.plugins.at(-1)!.kubeconfig, kubeconfigFile);
    assert.equal(installer.installOnce().kubeconfigWritten, false, 'unchanged token: no rewrite');
  });

  it('reads labels with the ambit-cni ServiceAccount: namespace label enrolls, pod label none opts out', async () => {
    const src = new KubeMetadataSource(kubeconfigFile);
    const decide = async (ns: string, name: string) => enrollment(await src.pod(ns, name), await src.namespace(ns));
    assert.equal((await decide('meshed', 'app')).enrolled, true);
    const out = await decide('meshed', 'opted-out');
    assert.equal(out.enrolled, false);
    assert.match((out as { reason: string }).reason, /dataplane-mode=none/);
    assert.equal((await decide('plain', 'app')).enrolled, false);
    assert.equal(await src.pod('meshed', 'no-such-pod'), undefined, '404 is "unknown", not an error');
  });

  it('another ServiceAccount is refused, and the error names the RBAC the plugin needs', async () => {
    const kc = pluginKubeconfig({ confDir: join(dir, 'sa'), hostConfDir: join(dir, 'sa'), server: cp!.server, tokenFile: join(dir, 'sa', 'nobody-token'), caFile: join(dir, 'sa', 'ca.crt') });
    writeFileSync(kc.tokenFile, token('nobody'));
    writePluginKubeconfig(kc);
    await rejectsWith(new KubeMetadataSource(kc.file).pod('meshed', 'app'), 'CNI_KUBE_FORBIDDEN', /HTTP 403.*ClusterRole ambit-cni/);
  });

  it('ADD of a pod in an ambient namespace fails closed when the API server is unreachable', async () => {
    const kc = pluginKubeconfig({ confDir: join(dir, 'sa'), hostConfDir: join(dir, 'sa'), server: 'https://127.0.0.1:1', tokenFile: join(dir, 'sa', 'token'), caFile: join(dir, 'sa', 'ca.crt') });
    writePluginKubeconfig(kc);
    const env = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_NETNS: join(dir, 'sa', 'token'), CNI_IFNAME: 'eth0', CNI_ARGS: 'K8S_POD_NAMESPACE=meshed;K8S_POD_NAME=app' };
    const stdin = JSON.stringify({ cniVersion: '1.0.0', name: 'pods', type: 'ambit-cni', agentSocket: join(dir, 'no-agent.sock'), kubeconfig: kc.file, prevResult: { cniVersion: '1.0.0', ips: [{ address: '10.22.0.5/16' }] } });
    const down = await runCni(env, stdin);
    assert.equal(down.exitCode, 1);
    const err = JSON.parse(down.stdout) as { code: number; msg: string; details: string };
    assert.equal(err.code, 11, 'CNI "try again later"');
    assert.match(err.details, /^CNI_KUBE_UNREACHABLE/);
    assert.match(err.msg, /https:\/\/127\.0\.0\.1:1/);
    // With the real server the lookup says "enrolled" and the ADD goes on to the (missing) agent.
    const up = await runCni(env, JSON.stringify({ ...JSON.parse(stdin), kubeconfig: kubeconfigFile }));
    assert.equal(up.exitCode, 1);
    assert.match((JSON.parse(up.stdout) as { details: string }).details, /^CNI_AGENT_UNREACHABLE/, up.stdout);
    // A pod outside the mesh starts even so: it passes through.
    const plain = await runCni({ ...env, CNI_ARGS: 'K8S_POD_NAMESPACE=plain;K8S_POD_NAME=app' }, JSON.stringify({ ...JSON.parse(stdin), kubeconfig: kubeconfigFile }));
    assert.equal(plain.exitCode, 0, plain.stdout);
  });

  it('a rotated token rewrites the kubeconfig; uninstall removes it', () => {
    writeFileSync(join(dir, 'sa', 'token'), token('ambit-cni'));
    assert.equal(installer.installOnce().kubeconfigWritten, true);
    const kc = JSON.parse(readFileSync(kubeconfigFile, 'utf8')) as { users: { user: { token: string } }[] };
    assert.equal(kc.users[0]!.user.token, readFileSync(join(dir, 'sa', 'token'), 'utf8').trim());
    const un = installer.uninstall();
    assert.deepEqual(un.errors, []);
    assert.equal(un.kubeconfigRemoved, true);
    assert.equal(existsSync(kubeconfigFile), false);
  });
});
