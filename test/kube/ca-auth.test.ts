/**
 * CA authentication on a real API server: node agents present projected ServiceAccount tokens
 * (TokenRequest bound to the agent's pod, audience ambit-ca); the controller checks them with a
 * TokenReview and signs only for pods the API server places on the token's node. The controller
 * runs with its own service account and the RBAC of controller/rbac.yaml, so what it may do is
 * what the manifests grant. Also: the root ConfigMap, and the CA Secret surviving a restart.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { KubeObject } from '../../src/api/k8s.ts';
import { Controller } from '../../src/controller/controller.ts';
import { KubeClient, loadKubeConfig } from '../../src/controller/sources/kube/client.ts';
import { KubeSource } from '../../src/controller/sources/kube/kube-source.ts';
import { startKubeControlPlane, stopKubeControlPlane, type KubeControlPlane } from '../../src/local/kube/control-plane.ts';
import { ConfigClient } from '../../src/ztunnel/config/config-client.ts';
import { createCsr } from '../../src/ztunnel/identity/csr.ts';
import { StateStore } from '../../src/ztunnel/state/store.ts';
import { isAmbitError } from '../../src/shared/errors.ts';
import { kubectlOk, newTestDir, sweepLeftovers } from './kube-helpers.ts';

const NS = 'ambit-system';
const RBAC = join(import.meta.dirname, '..', '..', 'controller', 'rbac.yaml');

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('CA authentication with service account tokens', () => {
  let dir = '';
  let cp: KubeControlPlane | undefined;
  let admin: KubeClient;
  let controllerKubeconfig = '';
  let controller: Controller | undefined;
  const clients: ConfigClient[] = [];

  const create = <T = KubeObject>(path: string, body: object) => admin.request<T>('POST', path, body);
  const pod = (namespace: string, name: string, sa: string, node: string) => create(`/api/v1/namespaces/${namespace}/pods`, {
    apiVersion: 'v1', kind: 'Pod', metadata: { name },
    spec: { serviceAccountName: sa, nodeName: node, automountServiceAccountToken: false, containers: [{ name: 'c', image: 'none' }] },
  });
  /** A token as the kubelet projects it: bound to the pod, for `audience`. */
  async function token(sa: string, boundPod: KubeObject, audience = 'ambit-ca'): Promise<string> {
    const r = await create<{ status: { token: string } }>(`/api/v1/namespaces/${NS}/serviceaccounts/${sa}/token`, {
      apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest',
      spec: { audiences: [audience], expirationSeconds: 3600, boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: boundPod.metadata.name, uid: boundPod.metadata.uid } },
    });
    return r.status.token;
  }
  function tokenFile(name: string, value: string): string {
    const f = join(dir, 'tokens', name);
    writeFileSync(f, value + '\n');
    return f;
  }
  async function startController(caDir: string): Promise<Controller> {
    const source = new KubeSource({ kubeconfig: controllerKubeconfig }, { lease: false });
    controller = await Controller.start({ manifests: '', caDir: join(dir, caDir), host: '127.0.0.1', port: 0, source, kube: { namespace: NS, caSecret: 'ambit-ca' } });
    return controller;
  }
  function client(node: string, creds: { tokenFile: string } | { certPem: string; keyPem: string }): ConfigClient {
    const c = new ConfigClient({ address: `127.0.0.1:${controller!.port}`, node, rootsPem: controller!.ca.rootCertPem, store: new StateStore(), minBackoffMs: 100, maxBackoffMs: 500, ...creds });
    clients.push(c);
    return c;
  }
  async function sign(c: ConfigClient, ns: string, sa: string) {
    const { csrPem } = await createCsr(`spiffe://cluster.local/ns/${ns}/sa/${sa}`);
    return c.signCsr(csrPem, 3600);
  }
  async function refused(c: ConfigClient, ns: string, sa: string, message: RegExp): Promise<void> {
    await assert.rejects(sign(c, ns, sa), (err) => {
      assert.ok(isAmbitError(err, 'ZT_CSR_DENIED'), `expected ZT_CSR_DENIED, got ${String(err)}`);
      assert.match(err.message, message);
      return true;
    });
  }

  let agentA: KubeObject;
  let agentB: KubeObject;
  let otherA: KubeObject;

  before(async () => {
    await sweepLeftovers();
    dir = newTestDir();
    mkdirSync(join(dir, 'tokens'));
    cp = await startKubeControlPlane({ dir: join(dir, 'cp') });
    admin = new KubeClient(loadKubeConfig({ kubeconfig: cp.kubeconfig }));
    await create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
    await create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'app' } });
    // (the pod garbage collector deletes pods bound to nodes that do not exist)
    for (const n of ['node-a', 'node-b']) await create('/api/v1/nodes', { apiVersion: 'v1', kind: 'Node', metadata: { name: n } });
    for (const sa of ['ambit-agent', 'other']) await create(`/api/v1/namespaces/${NS}/serviceaccounts`, { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: sa } });
    for (const sa of ['web', 'db']) await create('/api/v1/namespaces/app/serviceaccounts', { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: sa } });
    agentA = await pod(NS, 'agent-a', 'ambit-agent', 'node-a');
    agentB = await pod(NS, 'agent-b', 'ambit-agent', 'node-b');
    otherA = await pod(NS, 'other-a', 'other', 'node-a');
    await pod('app', 'web-a', 'web', 'node-a');
    await pod('app', 'db-b', 'db', 'node-b');

    // The controller as its own service account, with the manifests' RBAC.
    kubectlOk(cp, ['apply', '-n', NS, '-f', RBAC]);
    const t = await create<{ status: { token: string } }>(`/api/v1/namespaces/${NS}/serviceaccounts/ambit-controller/token`, {
      apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { expirationSeconds: 3600 },
    });
    controllerKubeconfig = join(dir, 'controller.kubeconfig');
    writeFileSync(controllerKubeconfig, stringify({
      apiVersion: 'v1', kind: 'Config', 'current-context': 'c',
      clusters: [{ name: 'c', cluster: { server: cp.server, 'certificate-authority-data': readFileSync(cp.pki.caCert).toString('base64') } }],
      users: [{ name: 'u', user: { token: t.status.token } }],
      contexts: [{ name: 'c', context: { cluster: 'c', user: 'u' } }],
    }), { mode: 0o600 });
  });

  after(async () => {
    for (const c of clients) await c.stop().catch(() => {});
    await controller?.stop().catch(() => {});
    await cp?.stop();
    if (dir) await stopKubeControlPlane(join(dir, 'cp'));
    rmSync(dir, { recursive: true, force: true });
  });

  it('signs for a pod on the token\'s node only; refuses other service accounts and audiences', async () => {
    const c = await startController('ca1');
    const review = await create<{ status: { user: { extra?: Record<string, string[]> } } }>('/apis/authentication.k8s.io/v1/tokenreviews', {
      apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token: await token('ambit-agent', agentA), audiences: ['ambit-ca'] },
    });
    const claimed = review.status.user.extra?.['authentication.kubernetes.io/node-name'];
    console.log(`the token names its node: ${claimed ? claimed.join(',') : 'no (the CA reads the bound pod)'}`);
    const a = client('node-a', { tokenFile: tokenFile('a', await token('ambit-agent', agentA)) });
    const signed = await sign(a, 'app', 'web');
    assert.match(signed.certChainPem, /BEGIN CERTIFICATE/);
    assert.equal(signed.rootsPem, c.ca.rootCertPem);
    await refused(a, 'app', 'db', /node node-a may not get a certificate for spiffe:\/\/cluster\.local\/ns\/app\/sa\/db: .*on node node-a \(such pods run on: node-b\)/);

    // The agent of node-b, same service account: the other way round.
    const b = client('node-b', { tokenFile: tokenFile('b', await token('ambit-agent', agentB)) });
    await sign(b, 'app', 'db');
    await refused(b, 'app', 'web', /node node-b may not get/);

    // A pod created a moment ago counts (the API server is asked when the snapshot lags).
    await pod('app', 'late-b', 'web', 'node-b');
    await sign(b, 'app', 'web');

    // Another service account's token, bound to a pod on node-a.
    const other = client('node-a', { tokenFile: tokenFile('other', await token('other', otherA)) });
    await refused(other, 'app', 'web', /system:serviceaccount:ambit-system:other, not to the node agent's service account system:serviceaccount:ambit-system:ambit-agent/);

    // The agent's own service account, but a token for another audience (e.g. the API server's).
    const wrong = client('node-a', { tokenFile: tokenFile('wrong', await token('ambit-agent', agentA, 'https://kubernetes.default.svc.cluster.local')) });
    await refused(wrong, 'app', 'web', /did not accept the token for audience ambit-ca/);

    // A token that is not one.
    await refused(client('node-a', { tokenFile: tokenFile('garbage', 'not-a-token') }), 'app', 'web', /did not accept the token/);

    // The token file is read for every call (the kubelet rotates it).
    const rotating = tokenFile('rotating', 'not-a-token');
    const r = client('node-a', { tokenFile: rotating });
    await refused(r, 'app', 'web', /did not accept the token/);
    writeFileSync(rotating, await token('ambit-agent', agentA));
    await sign(r, 'app', 'web');

    assert.ok(c.push.stats.certificatesIssued >= 4);
  });

  it('serves config to a token whose pod is on the node it claims, and not to another node', async () => {
    const c = controller!;
    const a = client('node-a', { tokenFile: tokenFile('cfg-a', await token('ambit-agent', agentA)) });
    a.start();
    await a.waitSynced(15_000);
    assert.ok(c.push.agents().some((s) => s.node === 'node-a'));

    const liar = client('node-b', { tokenFile: tokenFile('cfg-liar', await token('ambit-agent', agentA)) });
    liar.start();
    await assert.rejects(liar.waitSynced(2000), /no config from the controller/);
    assert.ok(!c.push.agents().some((s) => s.node === 'node-b'), 'a node-a token gets no stream for node-b');

    // An agent client certificate (the local mesh's credential) still works next to tokens.
    const creds = await c.ca.issueAgentCredentials('node-b');
    const viaCert = client('node-b', { certPem: creds.certPem, keyPem: creds.keyPem });
    await sign(viaCert, 'app', 'db');
    await refused(viaCert, 'app', 'nobody', /no pod in namespace app uses service account nobody/);
  });

  it('publishes the root in ambit-root-cert and keeps the CA in a Secret across restarts', async () => {
    const first = controller!;
    const root = first.ca.rootCertPem;
    const cm = await until('the root ConfigMap', () => admin.request<{ data: Record<string, string> }>('GET', `/api/v1/namespaces/${NS}/configmaps/ambit-root-cert`));
    assert.equal(cm.data['root-cert.pem'], root);
    const secret = await admin.request<{ data: Record<string, string> }>('GET', `/api/v1/namespaces/${NS}/secrets/ambit-ca`);
    assert.equal(Buffer.from(secret.data['ca-cert.pem'], 'base64').toString(), root);
    assert.ok(secret.data['ca-key.pem']);

    for (const c of clients.splice(0)) await c.stop();
    await first.stop();
    controller = undefined;
    // A new working directory, as a new pod has: the root comes from the Secret.
    const second = await startController('ca2');
    assert.equal(second.ca.rootCertPem, root, 'same root after a restart');
    const a = client('node-a', { tokenFile: tokenFile('after', await token('ambit-agent', agentA)) });
    await sign(a, 'app', 'web');

    // A deleted ConfigMap comes back (checked periodically; here: after a restart of the publisher).
    await admin.request('DELETE', `/api/v1/namespaces/${NS}/configmaps/ambit-root-cert`);
    await second.rootPublisher!.stop();
    second.rootPublisher!.start();
    const again = await until('the root ConfigMap again', () => admin.request<{ data: Record<string, string> }>('GET', `/api/v1/namespaces/${NS}/configmaps/ambit-root-cert`));
    assert.equal(again.data['root-cert.pem'], root);
  });
});
