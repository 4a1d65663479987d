// The agent's hand-written PKCS#10 encoder (src/ztunnel/identity/csr.ts) against the CA's parser
// (@peculiar/x509 + node:crypto signature check).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { CertificateAuthority } from '../../src/controller/ca/ca.ts';
import { parseWorkloadCsr } from '../../src/controller/ca/csr.ts';
import { x509 } from '../../src/controller/ca/pki.ts';
import { createCsr, encodeCsr } from '../../src/ztunnel/identity/csr.ts';
import { isAmbitError } from '../../src/shared/errors.ts';

const TD = 'cluster.local';
const ID = `spiffe://${TD}/ns/shop/sa/cart`;
let tmp: string;
let ca: CertificateAuthority;

before(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'ambit-agent-csr-'));
  ca = await CertificateAuthority.loadOrCreate(path.join(tmp, 'ca'), { trustDomain: TD });
});
after(async () => { await fs.rm(tmp, { recursive: true, force: true }); });

function derOf(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

test('the CA parses and signs the agent CSR: one critical URI SAN, empty subject, our key', async () => {
  const { keyPem, csrPem } = await createCsr(ID);
  assert.match(csrPem, /^-----BEGIN CERTIFICATE REQUEST-----\n[A-Za-z0-9+/=\n]+\n-----END CERTIFICATE REQUEST-----\n$/);
  const parsed = parseWorkloadCsr(csrPem, TD);
  assert.equal(parsed.spiffeId, ID);
  assert.equal(parsed.namespace, 'shop');
  assert.equal(parsed.serviceAccount, 'cart');
  const ourSpki = crypto.createPublicKey(keyPem).export({ type: 'spki', format: 'der' });
  assert.ok(parsed.spki.equals(ourSpki), 'CSR carries the generated public key');

  const csr = new x509.Pkcs10CertificateRequest(csrPem);
  assert.equal(csr.subject, '');
  assert.ok(await csr.verify(), '@peculiar/x509 verifies the signature too');
  const san = csr.extensions.find((e) => e.type === '2.5.29.17')!;
  assert.equal(san.critical, true);
  assert.equal(crypto.createPrivateKey(keyPem).asymmetricKeyDetails?.namedCurve, 'prime256v1');

  const signed = await ca.signWorkloadCsr(csrPem, 3600);
  const leaf = new crypto.X509Certificate(signed.certChainPem);
  assert.equal(leaf.subjectAltName, `URI:${ID}`);
  assert.ok(leaf.checkPrivateKey(crypto.createPrivateKey(keyPem)));
});

test('a tampered agent CSR is rejected by the CA (CA_BAD_CSR)', async () => {
  const { csrPem } = await createCsr(ID);
  const der = derOf(csrPem);
  // Change one character of the URI inside the signed part: "cart" -> "cars".
  const at = der.indexOf(Buffer.from('sa/cart')) + 6;
  assert.ok(at > 6);
  der[at] = 's'.charCodeAt(0);
  const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
  assert.throws(() => parseWorkloadCsr(tampered, TD), (err) => isAmbitError(err, 'CA_BAD_CSR') && /signature/.test((err as Error).message));
  await assert.rejects(ca.signWorkloadCsr(tampered, 3600), (err) => isAmbitError(err, 'CA_BAD_CSR'));
});

test('a CSR signed by another key is rejected', () => {
  const a = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  const b = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  // Put a's SPKI with b's signature: splice the signature of b's CSR over a's.
  const da = derOf(encodeCsr(a, ID));
  const db = derOf(encodeCsr(b, ID));
  // Both share the same layout up to the BIT STRING; swap everything after the signature algorithm.
  const algA = da.indexOf(Buffer.from('06082a8648ce3d040302', 'hex'));
  const algB = db.indexOf(Buffer.from('06082a8648ce3d040302', 'hex'));
  const hdr = (d: Buffer) => (d[1] < 0x80 ? 2 : 2 + (d[1] & 0x7f));
  const mixedBody = Buffer.concat([da.subarray(hdr(da), algA - 2), db.subarray(algB - 2)]);
  const lenBytes = mixedBody.length < 256 ? Buffer.from([0x81, mixedBody.length]) : Buffer.from([0x82, mixedBody.length >> 8, mixedBody.length & 0xff]);
  const mixed = Buffer.concat([Buffer.from([0x30]), lenBytes, mixedBody]);
  const pem = `-----BEGIN CERTIFICATE REQUEST-----\n${mixed.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
  assert.throws(() => parseWorkloadCsr(pem, TD), (err) => isAmbitError(err, 'CA_BAD_CSR') && /signature does not match/.test((err as Error).message));
});

test('createCsr refuses a malformed SPIFFE ID (ID_BAD_IDENTITY)', async () => {
  await assert.rejects(createCsr('spiffe://cluster.local/ns/shop'), (err) => isAmbitError(err, 'ID_BAD_IDENTITY'));
  await assert.rejects(createCsr('https://example.com/x'), (err) => isAmbitError(err, 'ID_BAD_IDENTITY'));
});
