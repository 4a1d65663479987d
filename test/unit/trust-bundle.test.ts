/**
 * The agent's trust bundle follows the roots of the latest CreateCertificate answer: held
 * identities are re-based onto a changed bundle (same certificate, announced through onRotate), an
 * identity the new roots no longer anchor is renewed at once, and an unchanged bundle is no event.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { CertificateAuthority } from '../../src/controller/ca/ca.ts';
import { CertificateManager, type Credentials } from '../../src/ztunnel/identity/index.ts';
import { anchoredBy, rootFingerprints } from '../../src/ztunnel/identity/trust-bundle.ts';

const TD = 'cluster.local';
let tmp: string;
let ca1: CertificateAuthority;
let ca2: CertificateAuthority;
const managers: CertificateManager[] = [];

before(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'ambt-tb-unit-'));
  ca1 = await CertificateAuthority.loadOrCreate(path.join(tmp, 'ca1'), { trustDomain: TD });
  ca2 = await CertificateAuthority.loadOrCreate(path.join(tmp, 'ca2'), { trustDomain: TD });
});
after(async () => {
  for (const m of managers) m.stop();
  await fs.rm(tmp, { recursive: true, force: true });
});

/** A controller whose CA and bundle the test switches. */
function controller() {
  const c = {
    signWith: () => ca1,
    roots: () => ca1.rootCertPem,
    signer: async (csr: string, ttl: number) => ({ certChainPem: (await c.signWith().signWorkloadCsr(csr, ttl)).certChainPem, rootsPem: c.roots() }),
  };
  return c;
}
const a = { namespace: 'demo', serviceAccount: 'a' };
const b = { namespace: 'demo', serviceAccount: 'b' };

test('a new root in the bundle: other identities re-based (same serial), onRotate + onTrustBundle fire once', async () => {
  const ctl = controller();
  const m = new CertificateManager({ signer: ctl.signer, trustDomain: TD });
  managers.push(m);
  const a1 = await m.get(a);
  const b1 = await m.get(b);
  assert.equal(m.trustBundle, ca1.rootCertPem);
  const rotated: Credentials[] = [];
  const bundles: string[] = [];
  m.onRotate((c) => rotated.push(c));
  m.onTrustBundle((r) => bundles.push(r));
  // Same roots again (b renews under the same CA): no bundle event.
  m.forget(b);
  const b2 = await m.get(b);
  assert.deepEqual(bundles, []);
  assert.deepEqual(rotated.map((c) => c.serial), [b2.serial]);
  rotated.length = 0;

  ctl.roots = () => ca1.rootCertPem + ca2.rootCertPem; // the CA adds root 2, still signs with root 1
  m.forget(b);
  const b3 = await m.get(b);
  assert.deepEqual(bundles, [ca1.rootCertPem + ca2.rootCertPem]);
  const aNow = await m.get(a);
  assert.equal(aNow.serial, a1.serial, 'same certificate');
  assert.equal(aNow.rootsPem, ca1.rootCertPem + ca2.rootCertPem);
  assert.notEqual(aNow, a1, 'a new object: TLS contexts are cached per credentials object');
  assert.deepEqual(rotated.map((c) => [c.identity, c.serial]).sort(), [[a1.identity, a1.serial], [b3.identity, b3.serial]].sort());
  assert.equal(a1.rootsPem, ca1.rootCertPem, 'the old object is untouched (open connections keep theirs)');
  assert.notEqual(b1.serial, b3.serial);
});

test('a bundle that no longer anchors an identity: that identity is renewed at once from the current CA', async () => {
  const ctl = controller();
  const m = new CertificateManager({ signer: ctl.signer, trustDomain: TD });
  managers.push(m);
  const a1 = await m.get(a);
  await m.get(b);
  // Root 1 is retired: the CA signs with root 2 and hands out only root 2.
  ctl.signWith = () => ca2;
  ctl.roots = () => ca2.rootCertPem;
  m.forget(b);
  await m.get(b);
  const deadline = Date.now() + 3000;
  while (m.current(a1.identity)?.serial === a1.serial && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  const a2 = m.current(a1.identity)!;
  assert.notEqual(a2.serial, a1.serial, 'renewed');
  assert.ok(anchoredBy(a2.certChainPem, ca2.rootCertPem));
  assert.equal(anchoredBy(a1.certChainPem, ca2.rootCertPem), false);
});

test('rootFingerprints ignores order', () => {
  assert.deepEqual(rootFingerprints(ca1.rootCertPem + ca2.rootCertPem), rootFingerprints(ca2.rootCertPem + ca1.rootCertPem));
  assert.equal(rootFingerprints(ca1.rootCertPem).length, 1);
});
