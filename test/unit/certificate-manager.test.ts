import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { CertificateAuthority } from '../../src/controller/ca/ca.ts';
import { CertificateManager, type Credentials, type CsrSigner } from '../../src/ztunnel/identity/index.ts';
import { createCsr } from '../../src/ztunnel/identity/csr.ts';
import { isAmbitError } from '../../src/shared/errors.ts';

const TD = 'cluster.local';
let tmp: string;
let ca: CertificateAuthority;
let otherCa: CertificateAuthority;
const managers: CertificateManager[] = [];

before(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'ambit-cm-test-'));
  ca = await CertificateAuthority.loadOrCreate(path.join(tmp, 'ca'), { trustDomain: TD });
  otherCa = await CertificateAuthority.loadOrCreate(path.join(tmp, 'ca2'), { trustDomain: TD });
});
after(async () => {
  for (const m of managers) m.stop();
  await fs.rm(tmp, { recursive: true, force: true });
});

function manager(signer: CsrSigner, o: { ttlSeconds?: number; backoff?: { initialMs?: number; maxMs?: number } } = {}): CertificateManager {
  const m = new CertificateManager({ signer, trustDomain: TD, ...o });
  managers.push(m);
  return m;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

test('concurrent get() for one identity = one signing; cached afterwards; key/cert usable', async () => {
  let calls = 0;
  const m = manager(async (csr, ttl) => { calls++; return ca.signWorkloadCsr(csr, ttl); });
  const id = { namespace: 'demo', serviceAccount: 'echo' };
  const t0 = performance.now();
  const [a, b, c] = await Promise.all([m.get(id), m.get(id), m.get(id)]);
  const firstMs = performance.now() - t0;
  assert.equal(calls, 1);
  assert.equal(a, b);
  assert.equal(b, c);
  assert.equal(a.identity, 'spiffe://cluster.local/ns/demo/sa/echo');
  assert.equal(await m.get(id), a);
  assert.equal(calls, 1);
  assert.equal(m.current(a.identity), a);
  // The pair is consistent and usable for TLS.
  const leaf = new crypto.X509Certificate(a.certChainPem);
  assert.equal(leaf.serialNumber, a.serial);
  assert.ok(leaf.checkPrivateKey(crypto.createPrivateKey(a.keyPem)));
  const st = m.list();
  assert.equal(st.length, 1);
  assert.equal(st[0].state, 'valid');
  assert.equal(st[0].serial, a.serial);
  // A different identity is a separate signing.
  await m.get({ namespace: 'demo', serviceAccount: 'other' });
  assert.equal(calls, 2);
  assert.equal(m.list().length, 2);
  await assert.rejects(m.get({ namespace: 'Bad_NS', serviceAccount: 'x' }), (e) => isAmbitError(e, 'ID_BAD_IDENTITY'));
  console.log(`# first get (keygen + CSR + sign + validate) ${firstMs.toFixed(1)} ms`);
});

test('ttl 2 s: renewed around half-life, onRotate fires with new serial, old creds untouched', async () => {
  let calls = 0;
  const m = manager(async (csr, ttl) => { calls++; return ca.signWorkloadCsr(csr, ttl); }, { ttlSeconds: 2 });
  const rotated: { c: Credentials; at: number }[] = [];
  m.onRotate((c) => rotated.push({ c, at: Date.now() }));
  const t0 = Date.now();
  const first = await m.get({ namespace: 'demo', serviceAccount: 'short' });
  assert.equal(rotated.length, 1, 'first issuance is reported');
  await waitFor(() => rotated.length >= 2, 3000, 'a renewal');
  const renewal = rotated[1];
  const after = renewal.at - t0;
  // notAfter has 1 s precision, so half-life lands between ~0.5 s and ~1 s.
  assert.ok(after > 300 && after < 1800, `renewed after ${after} ms`);
  assert.notEqual(renewal.c.serial, first.serial);
  assert.notEqual(renewal.c.keyPem, first.keyPem, 'a new key per certificate');
  assert.equal(renewal.c.identity, first.identity);
  assert.equal(await m.get({ namespace: 'demo', serviceAccount: 'short' }), renewal.c);
  assert.ok(first.certChainPem.length > 0 && first.keyPem.length > 0, 'old credentials object left intact');
  // forget() stops renewals.
  m.forget({ namespace: 'demo', serviceAccount: 'short' });
  const n = calls;
  await sleep(1500);
  assert.equal(calls, n, 'no renewal after forget');
  assert.equal(m.list().length, 0);
});

test('signer failing twice then succeeding: backoff and recovery', async () => {
  let calls = 0;
  const times: number[] = [];
  const m = manager(async (csr, ttl) => {
    calls++;
    times.push(Date.now());
    if (calls <= 2) throw new Error(`controller unreachable (attempt ${calls})`);
    return ca.signWorkloadCsr(csr, ttl);
  }, { backoff: { initialMs: 100, maxMs: 1000 } });
  const id = { namespace: 'demo', serviceAccount: 'flaky' };
  const identity = 'spiffe://cluster.local/ns/demo/sa/flaky';
  await assert.rejects(m.get(id), (e) => isAmbitError(e, 'ID_SIGN_FAILED') && /attempt 1/.test((e as Error).message));
  assert.equal(m.list()[0].state, 'failed');
  assert.match(m.list()[0].lastError ?? '', /attempt 1/);
  // While the retry is pending, get() fails fast with the last error instead of hitting the CA.
  await assert.rejects(m.get(id), (e) => isAmbitError(e, 'ID_UNAVAILABLE'));
  assert.equal(calls, 1);
  await waitFor(() => m.current(identity) !== undefined, 3000, 'recovery');
  assert.equal(calls, 3);
  const gap1 = times[1] - times[0];
  const gap2 = times[2] - times[1];
  assert.ok(gap1 >= 70 && gap1 < 400, `first retry after ${gap1} ms (100 ms +-25 %)`);
  assert.ok(gap2 >= 140 && gap2 < 600, `second retry after ${gap2} ms (200 ms +-25 %)`);
  const st = m.list()[0];
  assert.equal(st.state, 'valid');
  assert.equal(st.lastError, undefined);
  assert.ok((await m.get(id)).serial);
});

test('retryNow() skips the pending backoff', async () => {
  let fail = true;
  let calls = 0;
  const m = manager(async (csr, ttl) => { calls++; if (fail) throw new Error('not connected'); return ca.signWorkloadCsr(csr, ttl); },
    { backoff: { initialMs: 60_000, maxMs: 60_000 } });
  const id = { namespace: 'demo', serviceAccount: 'later' };
  await assert.rejects(m.get(id));
  assert.ok(m.list()[0].nextAttemptAt!.getTime() > Date.now() + 30_000);
  fail = false;
  m.retryNow();
  await waitFor(() => m.current('spiffe://cluster.local/ns/demo/sa/later') !== undefined, 2000, 'retry');
  assert.equal(calls, 2);
});

test('renewal failures keep serving the valid certificate (state renewing)', async () => {
  let calls = 0;
  let fail = false;
  const m = manager(async (csr, ttl) => { calls++; if (fail) throw new Error('CA down'); return ca.signWorkloadCsr(csr, ttl); },
    { ttlSeconds: 3, backoff: { initialMs: 5000, maxMs: 5000 } });
  const id = { namespace: 'demo', serviceAccount: 'renew' };
  const c = await m.get(id);
  fail = true;
  await waitFor(() => calls >= 2, 3000, 'renewal attempt');
  await sleep(20);
  assert.equal(m.list()[0].state, 'renewing');
  assert.equal(await m.get(id), c, 'still valid: served from cache');
});

test('signer returning a certificate for another identity / another key / foreign root -> ID_BAD_CERT', async () => {
  const wrongId = manager(async (_csr, ttl) => ca.signWorkloadCsr((await createCsr('spiffe://cluster.local/ns/demo/sa/mallory')).csrPem, ttl));
  await assert.rejects(wrongId.get({ namespace: 'demo', serviceAccount: 'alice' }),
    (e) => isAmbitError(e, 'ID_BAD_CERT') && /mallory.*expected exactly spiffe:\/\/cluster\.local\/ns\/demo\/sa\/alice/.test((e as Error).message));

  // Right identity, but for a key that is not ours.
  const wrongKey = manager(async (_csr, ttl) => ca.signWorkloadCsr((await createCsr('spiffe://cluster.local/ns/demo/sa/alice')).csrPem, ttl));
  await assert.rejects(wrongKey.get({ namespace: 'demo', serviceAccount: 'alice' }), (e) => isAmbitError(e, 'ID_BAD_CERT') && /key/.test((e as Error).message));

  // Chain from one CA, roots from another.
  const wrongRoot = manager(async (csr, ttl) => ({ certChainPem: (await ca.signWorkloadCsr(csr, ttl)).certChainPem, rootsPem: otherCa.rootCertPem }));
  await assert.rejects(wrongRoot.get({ namespace: 'demo', serviceAccount: 'alice' }), (e) => isAmbitError(e, 'ID_BAD_CERT') && /root/.test((e as Error).message));

  // Already expired.
  const expired = manager(async (csr) => ca.signWorkloadCsrWithValidity(csr, new Date(Date.now() - 7200_000), new Date(Date.now() - 3600_000)));
  await assert.rejects(expired.get({ namespace: 'demo', serviceAccount: 'alice' }), (e) => isAmbitError(e, 'ID_BAD_CERT') && /expired/.test((e as Error).message));

  const garbage = manager(async () => ({ certChainPem: 'nope', rootsPem: ca.rootCertPem }));
  await assert.rejects(garbage.get({ namespace: 'demo', serviceAccount: 'alice' }), (e) => isAmbitError(e, 'ID_BAD_CERT'));
});

test('stop() clears timers and refuses new work', async () => {
  const m = manager(async (csr, ttl) => ca.signWorkloadCsr(csr, ttl), { ttlSeconds: 2 });
  await m.get({ namespace: 'demo', serviceAccount: 'stopme' });
  m.stop();
  await assert.rejects(m.get({ namespace: 'demo', serviceAccount: 'stopme' }), (e) => isAmbitError(e, 'ID_STOPPED'));
});
