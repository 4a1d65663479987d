import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { CertificateAuthority, agentNodeFromCert } from '../../src/controller/ca/ca.ts';
import { x509, generateP256 } from '../../src/controller/ca/pki.ts';
import { createCsr } from '../../src/ztunnel/identity/csr.ts';
import { isAmbitError } from '../../src/shared/errors.ts';

const TD = 'cluster.local';
let tmp: string;
let ca: CertificateAuthority;

before(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'ambit-ca-test-'));
  ca = await CertificateAuthority.loadOrCreate(path.join(tmp, 'ca'), { trustDomain: TD });
});
after(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

type San = { type: 'url' | 'dns' | 'ip'; value: string };
async function csrWith(sans: San[], keys?: crypto.webcrypto.CryptoKeyPair, alg: Record<string, unknown> = { name: 'ECDSA', hash: 'SHA-256' }): Promise<string> {
  const k = keys ?? await generateP256();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: k, signingAlgorithm: alg as never,
    extensions: [new x509.SubjectAlternativeNameExtension(sans, true)],
  });
  return csr.toString('pem');
}

function assertCode(code: string, re?: RegExp) {
  return (err: unknown) => {
    assert.ok(isAmbitError(err, code), `expected AmbitError ${code}, got ${String((err as Error)?.stack ?? err)}`);
    if (re) assert.match((err as Error).message, re);
    return true;
  };
}

test('signs a workload CSR: chain verifies, SAN is exactly the URI, TTL honoured', async () => {
  const id = `spiffe://${TD}/ns/demo/sa/echo`;
  const { csrPem, keyPem } = await createCsr(id);
  assert.deepEqual(ca.parseCsrIdentity(csrPem), { trustDomain: TD, namespace: 'demo', serviceAccount: 'echo', spiffeId: id });
  const t0 = performance.now();
  const res = await ca.signWorkloadCsr(csrPem, 3600);
  const signMs = performance.now() - t0;
  const leaf = new crypto.X509Certificate(res.certChainPem);
  const root = new crypto.X509Certificate(res.rootsPem);
  assert.equal(res.rootsPem, ca.rootCertPem);
  assert.ok(leaf.checkIssued(root), 'leaf issued by root');
  assert.ok(leaf.verify(root.publicKey), 'leaf signature verifies with root key');
  assert.ok(root.ca && !leaf.ca);
  assert.equal(leaf.subjectAltName, `URI:${id}`);
  assert.equal(leaf.subject, undefined, 'empty subject');
  assert.deepEqual(leaf.keyUsage?.sort(), ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
  assert.equal(leaf.serialNumber.length, 32, '128-bit serial');
  const ttl = leaf.validToDate.getTime() - Date.now();
  assert.ok(ttl > 3590_000 && ttl <= 3600_000, `ttl ${ttl}`);
  assert.ok(leaf.validFromDate.getTime() < Date.now() - 50_000, 'notBefore backdated for skew');
  const pub = crypto.createPublicKey(keyPem).export({ type: 'spki', format: 'der' });
  assert.ok(pub.equals(leaf.publicKey.export({ type: 'spki', format: 'der' })), 'certifies the CSR key');
  // default TTL 24 h
  const def = new crypto.X509Certificate((await ca.signWorkloadCsr(csrPem)).certChainPem);
  const defTtl = def.validToDate.getTime() - Date.now();
  assert.ok(Math.abs(defTtl - 86400_000) < 5000, `default ttl ${defTtl}`);
  assert.notEqual(def.serialNumber, leaf.serialNumber);
  console.log(`# sign ${signMs.toFixed(1)} ms`);
});

test('rejects a CSR with a DNS SAN', async () => {
  const csr = await csrWith([{ type: 'url', value: `spiffe://${TD}/ns/a/sa/b` }, { type: 'dns', value: 'evil.example' }]);
  assert.throws(() => ca.parseCsrIdentity(csr), assertCode('CA_BAD_CSR', /only a URI SAN.*DNS:evil\.example/));
  await assert.rejects(ca.signWorkloadCsr(csr), assertCode('CA_BAD_CSR'));
});

test('rejects a CSR with two URI SANs', async () => {
  const csr = await csrWith([{ type: 'url', value: `spiffe://${TD}/ns/a/sa/b` }, { type: 'url', value: `spiffe://${TD}/ns/a/sa/c` }]);
  assert.throws(() => ca.parseCsrIdentity(csr), assertCode('CA_BAD_CSR', /exactly one URI SAN is required, found 2/));
});

test('rejects a CSR for a foreign trust domain', async () => {
  const csr = await csrWith([{ type: 'url', value: 'spiffe://other.domain/ns/a/sa/b' }]);
  await assert.rejects(ca.signWorkloadCsr(csr), assertCode('CA_FOREIGN_TRUST_DOMAIN', /other\.domain.*cluster\.local/));
});

test('rejects malformed SPIFFE IDs and garbage', async () => {
  for (const v of [`spiffe://${TD}/ns/A_B/sa/x`, `spiffe://${TD}/ns/a/sa/b/extra`, `https://${TD}/ns/a/sa/b`, `spiffe://${TD}/ns//sa/b`]) {
    const csr = await csrWith([{ type: 'url', value: v }]);
    assert.throws(() => ca.parseCsrIdentity(csr), assertCode('CA_BAD_CSR'), v);
  }
  assert.throws(() => ca.parseCsrIdentity('hello'), assertCode('CA_BAD_CSR', /PEM/));
  assert.throws(() => ca.parseCsrIdentity('-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n'), assertCode('CA_BAD_CSR'));
});

test('rejects a tampered CSR (bad signature)', async () => {
  const { csrPem } = await createCsr(`spiffe://${TD}/ns/demo/sa/bob`);
  const der = Buffer.from(csrPem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
  const at = der.indexOf('sa/bob');
  assert.ok(at > 0);
  der.write('sa/eve', at); // same length: still parses, claims another identity
  const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
  assert.throws(() => ca.parseCsrIdentity(tampered), assertCode('CA_BAD_CSR', /signature/));
});

test('rejects an RSA key and a P-384 key', async () => {
  const rsa = (await crypto.webcrypto.subtle.generateKey(
    { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }, true, ['sign', 'verify'])) as crypto.webcrypto.CryptoKeyPair;
  const csr = await csrWith([{ type: 'url', value: `spiffe://${TD}/ns/a/sa/b` }], rsa, { name: 'RSASSA-PKCS1-v1_5' });
  assert.throws(() => ca.parseCsrIdentity(csr), assertCode('CA_BAD_CSR', /rsa.*P-256/));
  const p384 = (await crypto.webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify'])) as crypto.webcrypto.CryptoKeyPair;
  const csr2 = await csrWith([{ type: 'url', value: `spiffe://${TD}/ns/a/sa/b` }], p384, { name: 'ECDSA', hash: 'SHA-384' });
  assert.throws(() => ca.parseCsrIdentity(csr2), assertCode('CA_BAD_CSR', /secp384r1/));
});

test('loadOrCreate twice reuses the same root; key file is 0600', async () => {
  const dir = path.join(tmp, 'ca-reuse');
  const a = await CertificateAuthority.loadOrCreate(dir);
  const b = await CertificateAuthority.loadOrCreate(dir);
  assert.equal(a.rootCertPem, b.rootCertPem);
  assert.equal(a.trustDomain, 'cluster.local');
  const st = await fs.stat(path.join(dir, 'ca-key.pem'));
  assert.equal(st.mode & 0o777, 0o600);
  const root = new crypto.X509Certificate(a.rootCertPem);
  assert.ok(root.ca);
  const years = (root.validToDate.getTime() - root.validFromDate.getTime()) / (365 * 86400_000);
  assert.ok(years > 9.9 && years < 10.1, `root validity ${years}y`);
  // A certificate from a (signs with the same key as b)
  const { csrPem } = await createCsr('spiffe://cluster.local/ns/x/sa/y');
  const leaf = new crypto.X509Certificate((await b.signWorkloadCsr(csrPem)).certChainPem);
  assert.ok(leaf.verify(root.publicKey));
});

test('concurrent loadOrCreate on an empty dir agree on one root', async () => {
  const dir = path.join(tmp, 'ca-race');
  const all = await Promise.all([1, 2, 3, 4].map(() => CertificateAuthority.loadOrCreate(dir)));
  for (const c of all) assert.equal(c.rootCertPem, all[0].rootCertPem);
  const files = (await fs.readdir(dir)).sort();
  assert.deepEqual(files, ['ca-cert.pem', 'ca-key.pem'], 'no temporary files left');
});

test('corrupt or mismatched root files -> CA_BAD_ROOT naming the file', async () => {
  const dir = path.join(tmp, 'ca-bad');
  await CertificateAuthority.loadOrCreate(dir);
  const other = path.join(tmp, 'ca-other');
  await CertificateAuthority.loadOrCreate(other);
  const certFile = path.join(dir, 'ca-cert.pem');
  const keyFile = path.join(dir, 'ca-key.pem');
  const goodCert = await fs.readFile(certFile, 'utf8');

  await fs.writeFile(certFile, 'not a certificate');
  await assert.rejects(CertificateAuthority.loadOrCreate(dir), assertCode('CA_BAD_ROOT', new RegExp(`${certFile}.*no PEM`)));
  await fs.writeFile(certFile, goodCert.replace(/[A-Za-z]{20}\n/, 'AAAAAAAAAAAAAAAAAAAA\n'));
  await assert.rejects(CertificateAuthority.loadOrCreate(dir), assertCode('CA_BAD_ROOT', new RegExp(certFile)));

  await fs.writeFile(certFile, goodCert);
  await fs.copyFile(path.join(other, 'ca-key.pem'), keyFile);
  await assert.rejects(CertificateAuthority.loadOrCreate(dir), assertCode('CA_BAD_ROOT', new RegExp(`${keyFile}.*does not match`)));

  await fs.writeFile(keyFile, 'garbage');
  await assert.rejects(CertificateAuthority.loadOrCreate(dir), assertCode('CA_BAD_ROOT', new RegExp(`${keyFile}.*not a valid private key`)));

  await fs.rm(keyFile);
  await assert.rejects(CertificateAuthority.loadOrCreate(dir), assertCode('CA_BAD_ROOT', new RegExp(`${keyFile}.*missing`)));
});

test('operator-provided intermediate CA (root-cert.pem + ca-cert.pem) signs chains to the root', async () => {
  // Build: root (from a generated CA dir) -> intermediate, issued with x509 directly.
  const rootDir = path.join(tmp, 'op-root');
  await CertificateAuthority.loadOrCreate(rootDir);
  const rootPem = await fs.readFile(path.join(rootDir, 'ca-cert.pem'), 'utf8');
  const rootKey = crypto.createPrivateKey(await fs.readFile(path.join(rootDir, 'ca-key.pem'), 'utf8'))
    .toCryptoKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
  const interKeys = await generateP256();
  const inter = await x509.X509CertificateGenerator.create({
    subject: 'CN=Intermediate', issuer: new x509.X509Certificate(rootPem).subjectName,
    publicKey: interKeys.publicKey, signingKey: rootKey as never, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as never,
    notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 86400_000 * 30),
    extensions: [new x509.BasicConstraintsExtension(true, 0, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
  });
  const dir = path.join(tmp, 'op-inter');
  await fs.mkdir(dir);
  await fs.writeFile(path.join(dir, 'ca-cert.pem'), inter.toString('pem'));
  await fs.writeFile(path.join(dir, 'ca-key.pem'), crypto.createPrivateKey({ key: Buffer.from(await crypto.webcrypto.subtle.exportKey('pkcs8', interKeys.privateKey)), format: 'der', type: 'pkcs8' }).export({ type: 'pkcs8', format: 'pem' }));
  // Without root-cert.pem an intermediate is refused.
  await assert.rejects(CertificateAuthority.loadOrCreate(dir), assertCode('CA_BAD_ROOT', /not self-signed/));
  await fs.writeFile(path.join(dir, 'root-cert.pem'), rootPem);
  const ica = await CertificateAuthority.loadOrCreate(dir);
  assert.equal(new crypto.X509Certificate(ica.rootCertPem).fingerprint256, new crypto.X509Certificate(rootPem).fingerprint256);
  const { csrPem } = await createCsr('spiffe://cluster.local/ns/a/sa/b');
  const res = await ica.signWorkloadCsr(csrPem);
  const certs = res.certChainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g)!.map((p) => new crypto.X509Certificate(p));
  assert.equal(certs.length, 2, 'leaf + intermediate');
  assert.ok(certs[0].verify(certs[1].publicKey));
  assert.ok(certs[1].verify(new crypto.X509Certificate(rootPem).publicKey));
});

test('agent credentials round trip through agentNodeFromCert', async () => {
  const creds = await ca.issueAgentCredentials('node-1');
  const cert = new crypto.X509Certificate(creds.certPem);
  assert.equal(cert.subject, 'O=ambit-agent\nCN=node-1');
  assert.equal(cert.subjectAltName, `URI:spiffe://${TD}/ns/istio-system/sa/ambit-agent`);
  assert.ok(cert.verify(new crypto.X509Certificate(ca.rootCertPem).publicKey));
  assert.ok(crypto.createPublicKey(creds.keyPem).export({ type: 'spki', format: 'der' }).equals(cert.publicKey.export({ type: 'spki', format: 'der' })));
  const years = (cert.validToDate.getTime() - Date.now()) / (365 * 86400_000);
  assert.ok(years > 0.99 && years < 1.01);
  assert.equal(agentNodeFromCert(creds.certPem), 'node-1');
  assert.equal(agentNodeFromCert(cert), 'node-1');
  assert.equal(agentNodeFromCert(cert.raw), 'node-1');
  assert.equal(agentNodeFromCert({ raw: cert.raw } as never), 'node-1');
  assert.equal(ca.verifiedAgentNode(creds.certPem), 'node-1');
  // Not agent certs:
  const { csrPem } = await createCsr(`spiffe://${TD}/ns/a/sa/b`);
  assert.equal(agentNodeFromCert((await ca.signWorkloadCsr(csrPem)).certChainPem), undefined);
  assert.equal(agentNodeFromCert(ca.rootCertPem), undefined);
  assert.equal(agentNodeFromCert('garbage'), undefined);
  // Signed by another CA: agentNodeFromCert reads it, verifiedAgentNode refuses it.
  const other = await CertificateAuthority.loadOrCreate(path.join(tmp, 'ca-agent-other'));
  const foreign = await other.issueAgentCredentials('node-1');
  assert.equal(ca.verifiedAgentNode(foreign.certPem), undefined);
  await assert.rejects(ca.issueAgentCredentials('Bad Name'), assertCode('CA_BAD_NODE_NAME'));
});

test('server credentials carry IP and DNS SANs', async () => {
  const creds = await ca.issueServerCredentials(['10.42.0.1', 'controller.local', '::1']);
  const cert = new crypto.X509Certificate(creds.certPem);
  assert.equal(cert.subjectAltName, 'IP Address:10.42.0.1, DNS:controller.local, IP Address:0:0:0:0:0:0:0:1');
  assert.equal(cert.checkIP('10.42.0.1'), '10.42.0.1');
  assert.equal(cert.checkHost('controller.local'), 'controller.local');
  assert.deepEqual(cert.keyUsage, ['1.3.6.1.5.5.7.3.1']);
  await assert.rejects(ca.issueServerCredentials([]), assertCode('CA_BAD_HOSTS'));
  await assert.rejects(ca.issueServerCredentials(['bad host']), assertCode('CA_BAD_HOSTS'));
});
