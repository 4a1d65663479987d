/**
 * The controller sends its trust bundle with every config response, so a root rotation reaches a
 * connected agent at once instead of with each identity's next certificate (up to 12 h later):
 *  1. the operator adds a new root R2 to the bundle while still signing with R1: after a controller
 *     restart the agent trusts [R2, R1] without asking for any certificate;
 *  2. the operator switches signing to R2: the restarted controller's serving certificate chains to
 *     R2 only, and the agent reconnects anyway (it verifies with the pushed bundle).
 * A real controller (manifest source) and the agent's real ConfigClient + CertificateManager over
 * loopback TLS.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateAuthority } from '../../src/controller/ca/ca.ts';
import { CA_CERT_FILE, CA_KEY_FILE, ROOT_CERT_FILE } from '../../src/controller/ca/root-store.ts';
import { Controller } from '../../src/controller/controller.ts';
import { ConfigClient } from '../../src/ztunnel/config/config-client.ts';
import { CertificateManager } from '../../src/ztunnel/identity/certificate-manager.ts';
import { anchoredBy, rootFingerprints } from '../../src/ztunnel/identity/trust-bundle.ts';
import { StateStore } from '../../src/ztunnel/state/store.ts';

const MANIFEST = `apiVersion: v1
kind: Namespace
metadata: {name: demo, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: app, namespace: demo, uid: uid-app}
spec:
  nodeName: n1
  serviceAccountName: default
  containers: [{name: app}]
status: {phase: Running, podIP: 10.1.0.1, conditions: [{type: Ready, status: "True"}]}
`;

let dir = '';
let caDir = '';
let controller: Controller | undefined;
let client: ConfigClient | undefined;
let certs: CertificateManager | undefined;
let csrs = 0;
let r1 = '';
let r2 = '';

async function startController(port: number): Promise<Controller> {
  controller = await Controller.start({ manifests: join(dir, 'manifests'), caDir, host: '127.0.0.1', port, source: undefined });
  return controller;
}

async function until(what: string, cond: () => boolean, timeoutMs = 15_000): Promise<number> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return Date.now() - start;
}

const bundle = () => rootFingerprints(certs?.trustBundle ?? '');

/** Replaces the controller's CA files as an operator would (then the controller is restarted). */
async function operatorFiles(files: Record<string, string>): Promise<void> {
  for (const [name, text] of Object.entries(files)) {
    await writeFile(join(caDir, `${name}.tmp`), text, { mode: 0o600 });
    await rename(join(caDir, `${name}.tmp`), join(caDir, name));
  }
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ambit-bundle-push-'));
  caDir = join(dir, 'ca');
  await mkdir(join(dir, 'manifests'));
  await writeFile(join(dir, 'manifests', 'ns.yaml'), MANIFEST);
  const c = await startController(0);
  r1 = c.ca.rootCertPem;
  r2 = (await CertificateAuthority.loadOrCreate(join(dir, 'ca2'))).rootCertPem;
  const creds = await c.ca.issueAgentCredentials('n1');
  certs = new CertificateManager({ signer: async (csr, ttl) => { csrs++; return client!.signCsr(csr, ttl); }, trustDomain: 'cluster.local' });
  client = new ConfigClient({
    address: `127.0.0.1:${c.port}`, node: 'n1', ...creds, store: new StateStore(), minBackoffMs: 50, maxBackoffMs: 300,
    onTrustBundle: (pem) => certs!.adoptTrustBundle(pem),
  });
  client.start();
  await client.waitSynced(5000);
});

after(async () => {
  certs?.stop();
  await client?.stop();
  await controller?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('the first config response brings the trust bundle: no certificate needed', async () => {
  await until('a trust bundle', () => bundle().length > 0);
  assert.deepEqual(bundle(), rootFingerprints(r1));
  assert.equal(csrs, 0);
});

test('a root added by the operator is trusted as soon as the agent is connected again', async () => {
  const port = controller!.port;
  await controller!.stop();
  // Still signing with R1; the bundle announces R2 (first in the file: R1 alone would be "no extra root").
  await operatorFiles({ [ROOT_CERT_FILE]: r2 + r1 });
  await startController(port);
  const took = await until('R2 in the agent bundle', () => bundle().length === 2);
  assert.deepEqual(bundle(), rootFingerprints(r1 + r2));
  assert.equal(csrs, 0, 'learned from the push, not from a certificate');
  process.stdout.write(`# controller back -> new root trusted after ${took} ms\n`);
});

test('signing switched to the new root: the agent still reaches the controller and gets R2-signed certificates', async () => {
  const port = controller!.port;
  await controller!.stop();
  await copyFile(join(dir, 'ca2', CA_KEY_FILE), join(caDir, `${CA_KEY_FILE}.new`));
  await operatorFiles({ [CA_CERT_FILE]: await readFile(join(dir, 'ca2', CA_CERT_FILE), 'utf8'), [ROOT_CERT_FILE]: r1 + r2 });
  await rename(join(caDir, `${CA_KEY_FILE}.new`), join(caDir, CA_KEY_FILE));
  const c = await startController(port);
  assert.deepEqual(rootFingerprints(c.ca.rootCertPem), rootFingerprints(r1 + r2));
  // Its serving certificate now chains to R2, which the agent knows only from the push.
  await until('the agent connected to the R2 controller', () => client!.connected && c.push.agents().length === 1);
  const id = await certs!.get({ namespace: 'demo', serviceAccount: 'default' });
  assert.equal(csrs, 1);
  assert.ok(anchoredBy(id.certChainPem, r2), 'the new certificate chains to R2');
  assert.ok(!anchoredBy(id.certChainPem, r1), 'and not to R1');
});

test('a bundle that is not CA certificates is refused and the previous one stays', async () => {
  const before = bundle();
  const leaf = (await controller!.ca.issueAgentCredentials('n1')).certPem;
  assert.throws(() => certs!.adoptTrustBundle(leaf), (e: Error & { code?: string }) => e.code === 'ID_BAD_BUNDLE' && /not a CA certificate/.test(e.message));
  assert.throws(() => certs!.adoptTrustBundle('garbage'), (e: Error & { code?: string }) => e.code === 'ID_BAD_BUNDLE' && /no PEM certificate/.test(e.message));
  assert.deepEqual(bundle(), before);
});
