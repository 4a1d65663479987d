/**
 * Reading a workload CSR: signature, key type, and the one SPIFFE identity it asks for. Everything
 * else in the CSR (subject, other extensions) is ignored: the CA decides what goes in a certificate.
 */
import * as crypto from 'node:crypto';
import { AmbitError } from '../../shared/errors.ts';
import { parseSpiffeId } from '../../shared/tls.ts';
import { x509, isP256 } from './pki.ts';

export interface CsrIdentity { trustDomain: string; namespace: string; serviceAccount: string; spiffeId: string }
export interface ParsedCsr extends CsrIdentity { publicKey: crypto.KeyObject; spki: Buffer }

const SAN_OID = '2.5.29.17';
const SIG_HASH: Record<string, string> = {
  '1.2.840.10045.4.3.2': 'sha256', // ecdsa-with-SHA256
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
};

function bad(msg: string, cause?: unknown): AmbitError {
  return new AmbitError('CA_BAD_CSR', `certificate signing request rejected: ${msg}`, cause === undefined ? undefined : { cause });
}

/** One DER TLV at `off`: where its header ends and the element ends. */
function tlv(buf: Buffer, off: number): { tag: number; start: number; end: number } {
  if (off + 2 > buf.length) throw new Error('truncated DER');
  const tag = buf[off];
  let len = buf[off + 1];
  let start = off + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || start + n > buf.length) throw new Error('bad DER length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[start + i];
    start += n;
  }
  if (start + len > buf.length) throw new Error('truncated DER');
  return { tag, start, end: start + len };
}

/** CertificationRequest ::= SEQUENCE { info, signatureAlgorithm, signature BIT STRING } */
function splitSigned(der: Buffer): { tbs: Buffer; algOid: string; signature: Buffer } {
  const outer = tlv(der, 0);
  if (outer.tag !== 0x30 || outer.end !== der.length) throw new Error('not a DER SEQUENCE');
  const info = tlv(der, outer.start);
  const alg = tlv(der, info.end);
  const sig = tlv(der, alg.end);
  if (info.tag !== 0x30 || alg.tag !== 0x30 || sig.tag !== 0x03 || sig.end !== outer.end) throw new Error('unexpected CSR structure');
  const oid = tlv(der, alg.start);
  if (oid.tag !== 0x06) throw new Error('bad signature algorithm');
  return {
    tbs: der.subarray(outer.start, info.end),
    algOid: decodeOid(der.subarray(oid.start, oid.end)),
    signature: der.subarray(sig.start + 1, sig.end), // skip the unused-bits byte
  };
}

function decodeOid(b: Buffer): string {
  const parts: number[] = [];
  let v = 0;
  for (const byte of b) {
    v = v * 128 + (byte & 0x7f);
    if (!(byte & 0x80)) { parts.push(v); v = 0; }
  }
  const first = parts.shift() ?? 0;
  const a = first < 80 ? Math.floor(first / 40) : 2;
  return [a, first - a * 40, ...parts].join('.');
}

/**
 * Verifies and reads a PEM CSR for a workload identity in `trustDomain`. Synchronous (node:crypto).
 * Throws AmbitError CA_BAD_CSR (malformed, bad signature, wrong key type, not exactly one SPIFFE URI
 * SAN, other SAN types) or CA_FOREIGN_TRUST_DOMAIN.
 */
export function parseWorkloadCsr(csrPem: string, trustDomain: string): ParsedCsr {
  if (typeof csrPem !== 'string' || !csrPem.includes('-----BEGIN CERTIFICATE REQUEST-----')) {
    throw bad('expected a PEM "CERTIFICATE REQUEST" block');
  }
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (err) {
    throw bad(`cannot parse the CSR (${(err as Error).message})`, err);
  }
  const spki = Buffer.from(csr.publicKey.rawData);
  let publicKey: crypto.KeyObject;
  try {
    publicKey = crypto.createPublicKey({ key: spki, format: 'der', type: 'spki' });
  } catch (err) {
    throw bad(`unreadable public key (${(err as Error).message})`, err);
  }
  if (!isP256(publicKey)) {
    const what = publicKey.asymmetricKeyType === 'ec' ? `EC ${publicKey.asymmetricKeyDetails?.namedCurve}` : publicKey.asymmetricKeyType;
    throw bad(`key type ${what} is not allowed; workload keys must be ECDSA P-256`);
  }
  let ok = false;
  try {
    const signed = splitSigned(Buffer.from(csr.rawData));
    const hash = SIG_HASH[signed.algOid];
    if (!hash) throw bad(`unsupported signature algorithm ${signed.algOid} (use ECDSA with SHA-256)`);
    ok = crypto.verify(hash, signed.tbs, { key: publicKey, dsaEncoding: 'der' }, signed.signature);
  } catch (err) {
    if (err instanceof AmbitError) throw err;
    throw bad(`cannot check the signature (${(err as Error).message})`, err);
  }
  if (!ok) throw bad('the signature does not match the CSR contents (tampered or corrupt)');

  const sanExts = csr.extensions.filter((e) => e.type === SAN_OID);
  if (sanExts.length !== 1) throw bad(`expected one subjectAltName extension with a SPIFFE URI, found ${sanExts.length}`);
  let names: { type: string; value: string }[];
  try {
    names = new x509.SubjectAlternativeNameExtension(sanExts[0].rawData).names.items.map((n) => ({ type: n.type, value: n.value }));
  } catch (err) {
    throw bad(`unreadable subjectAltName (${(err as Error).message})`, err);
  }
  const others = names.filter((n) => n.type !== 'url');
  if (others.length > 0) throw bad(`only a URI SAN is allowed, found ${others.map((n) => `${n.type.toUpperCase()}:${n.value}`).join(', ')}`);
  if (names.length !== 1) throw bad(`exactly one URI SAN is required, found ${names.length}${names.length ? ` (${names.map((n) => n.value).join(', ')})` : ''}`);
  const spiffeId = names[0].value;
  const m = /^spiffe:\/\/([^/]+)\//.exec(spiffeId);
  if (m && m[1] !== trustDomain) {
    throw new AmbitError('CA_FOREIGN_TRUST_DOMAIN', `certificate signing request for ${spiffeId} rejected: trust domain ${m[1]} is not this CA's (${trustDomain})`);
  }
  const id = parseSpiffeId(spiffeId);
  if (!id) throw bad(`URI SAN ${JSON.stringify(spiffeId)} is not of the form spiffe://${trustDomain}/ns/<namespace>/sa/<service-account> with valid names`);
  return { ...id, spiffeId, publicKey, spki };
}
