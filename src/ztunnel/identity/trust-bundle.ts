/**
 * Small checks on trust bundles (PEM roots): which roots a bundle holds, and whether a certificate
 * chain leads to one of them. Used when the bundle changes at run time.
 */
import * as crypto from 'node:crypto';

function certs(pem: string): crypto.X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  const out: crypto.X509Certificate[] = [];
  for (const b of blocks) {
    try { out.push(new crypto.X509Certificate(b)); } catch { /* not a certificate: holds no trust */ }
  }
  return out;
}

/** SHA-256 fingerprints of the roots in a bundle (short form, sorted): compares bundles, names roots in logs. */
export function rootFingerprints(rootsPem: string): string[] {
  return certs(rootsPem).map((c) => c.fingerprint256.replace(/:/g, '').slice(0, 16).toLowerCase()).sort();
}

/** Whether the chain (leaf first) ends in, or is issued by, one of the bundle's roots. */
export function anchoredBy(certChainPem: string, rootsPem: string): boolean {
  const chain = certs(certChainPem);
  const top = chain.at(-1);
  if (!top) return false;
  return certs(rootsPem).some((r) => r.fingerprint256 === top.fingerprint256 || (top.checkIssued(r) && top.verify(r.publicKey)));
}
