/**
 * Workload credentials as the agent holds them, and the check of what a signer returned: the leaf
 * must carry exactly the requested SPIFFE ID, hold our key, chain to the returned roots, and be
 * currently valid. Anything else is AmbitError ID_BAD_CERT.
 */
import * as crypto from 'node:crypto';
import { AmbitError } from '../../shared/errors.ts';
import { uriSans } from '../../shared/tls.ts';

export interface Credentials {
  identity: string;
  /** Leaf first, then intermediates (if any); PEM. */
  certChainPem: string;
  /** PKCS#8 PEM private key of the leaf. */
  keyPem: string;
  /** Trust anchors (PEM), for verifying peers. */
  rootsPem: string;
  /** Hex serial of the leaf (upper case, as node:crypto prints it). */
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

/** Sends a CSR to the CA; the agent's implementation is the config client's CreateCertificate RPC. */
export type CsrSigner = (csrPem: string, ttlSeconds: number) => Promise<{ certChainPem: string; rootsPem: string }>;

function splitCerts(pem: string): string[] {
  return (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []).map((b) => b + '\n');
}

function badCert(identity: string, msg: string, cause?: unknown): AmbitError {
  return new AmbitError('ID_BAD_CERT', `certificate returned for ${identity} rejected: ${msg}`, cause === undefined ? undefined : { cause });
}

/**
 * A trust bundle pushed by the controller: at least one certificate, every one a CA, all parsable.
 * Returns it normalised as validateIssued normalises the roots of an issuance (equal text, equal bundle).
 */
export function validateRoots(rootsPem: string): string {
  const pems = splitCerts(rootsPem);
  const bad = (msg: string, cause?: unknown) => new AmbitError('ID_BAD_BUNDLE', `trust bundle from the controller rejected: ${msg}; the previous bundle stays`, cause === undefined ? undefined : { cause });
  if (pems.length === 0) throw bad('it holds no PEM certificate');
  pems.forEach((p, i) => {
    let c: crypto.X509Certificate;
    try {
      c = new crypto.X509Certificate(p);
    } catch (err) {
      throw bad(`certificate ${i} is unparsable (${(err as Error).message})`, err);
    }
    if (!c.ca) throw bad(`certificate ${i} (${c.subject.replace(/\n/g, ', ')}) is not a CA certificate`);
  });
  return pems.join('');
}

/** Checks a signer's answer for `identity` + our `keyPem` and builds the Credentials. */
export function validateIssued(identity: string, keyPem: string, res: { certChainPem: string; rootsPem: string }, now = Date.now()): Credentials {
  if (!res || typeof res.certChainPem !== 'string' || typeof res.rootsPem !== 'string') throw badCert(identity, 'the signer returned no certificate chain/roots');
  const chainPems = splitCerts(res.certChainPem);
  const rootPems = splitCerts(res.rootsPem);
  if (chainPems.length === 0) throw badCert(identity, 'the certificate chain holds no PEM certificate');
  if (rootPems.length === 0) throw badCert(identity, 'no root certificate was returned');
  let chain: crypto.X509Certificate[];
  let roots: crypto.X509Certificate[];
  try {
    chain = chainPems.map((p) => new crypto.X509Certificate(p));
    roots = rootPems.map((p) => new crypto.X509Certificate(p));
  } catch (err) {
    throw badCert(identity, `unparsable certificate (${(err as Error).message})`, err);
  }
  const leaf = chain[0];
  const sans = uriSans(leaf);
  if (sans.length !== 1 || sans[0] !== identity) {
    throw badCert(identity, `its URI SAN is ${sans.length ? sans.join(', ') : 'missing'}, expected exactly ${identity}`);
  }
  const ourPub = crypto.createPublicKey(keyPem).export({ type: 'spki', format: 'der' });
  if (!ourPub.equals(leaf.publicKey.export({ type: 'spki', format: 'der' }))) throw badCert(identity, 'it does not certify the key we generated');
  for (let i = 0; i + 1 < chain.length; i++) {
    if (!chain[i].checkIssued(chain[i + 1]) || !chain[i].verify(chain[i + 1].publicKey)) {
      throw badCert(identity, `chain certificate ${i} is not signed by certificate ${i + 1}`);
    }
  }
  const top = chain[chain.length - 1];
  const anchored = roots.some((r) => r.fingerprint256 === top.fingerprint256 || (top.checkIssued(r) && top.verify(r.publicKey)));
  if (!anchored) throw badCert(identity, 'the chain does not lead to any of the returned roots');
  const notBefore = leaf.validFromDate;
  const notAfter = leaf.validToDate;
  if (notAfter.getTime() <= now) throw badCert(identity, `it expired at ${notAfter.toISOString()}`);
  return { identity, certChainPem: chainPems.join(''), keyPem, rootsPem: rootPems.join(''), serial: leaf.serialNumber, notBefore, notAfter };
}
