/**
 * Key and CSR generation for one workload identity: a fresh ECDSA P-256 key per certificate, a CSR
 * whose only content is the SPIFFE URI SAN (Istio's shape; the CA ignores everything else).
 *
 * The PKCS#10 request is DER-encoded here by hand (RFC 2986) and signed with node:crypto: the agent
 * only ever needs this one fixed shape, and an ASN.1 library (@peculiar/x509 + reflect-metadata)
 * costs the agent process ~15-20 MB of RSS for it. The CA side keeps parsing with @peculiar/x509.
 */
import * as crypto from 'node:crypto';
import { promisify } from 'node:util';
import { AmbitError } from '../../shared/errors.ts';
import { parseSpiffeId } from '../../shared/tls.ts';

const generateKeyPair = promisify(crypto.generateKeyPair);

// ---- minimal DER (definite lengths only; enough for the fixed CSR shape below)
function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  const n = body.length;
  let len: Buffer;
  if (n < 0x80) len = Buffer.from([n]);
  else {
    const bytes: number[] = [];
    for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
    len = Buffer.from([0x80 | bytes.length, ...bytes]);
  }
  return Buffer.concat([Buffer.from([tag]), len, body]);
}
const seq = (...c: Buffer[]): Buffer => tlv(0x30, ...c);
const set = (...c: Buffer[]): Buffer => tlv(0x31, ...c);
function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number);
  const out: number[] = [40 * arcs[0] + arcs[1]];
  for (const arc of arcs.slice(2)) {
    const b: number[] = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) b.unshift((v & 0x7f) | 0x80);
    out.push(...b);
  }
  return tlv(0x06, Buffer.from(out));
}

const OID_EXTENSION_REQUEST = '1.2.840.113549.1.9.14'; // PKCS#9 extensionRequest
const OID_SUBJECT_ALT_NAME = '2.5.29.17';
const OID_ECDSA_WITH_SHA256 = '1.2.840.10045.4.3.2';

/** DER CertificationRequestInfo: version 0, empty subject, our SPKI, extensionRequest {SAN URI (critical)}. */
function requestInfo(spkiDer: Buffer, uri: string): Buffer {
  const generalNames = seq(tlv(0x86, Buffer.from(uri, 'ascii'))); // [6] IMPLICIT IA5String uniformResourceIdentifier
  // Critical, as before: the subject is empty, so the SAN is the whole identity (RFC 5280 4.2.1.6).
  const sanExt = seq(oid(OID_SUBJECT_ALT_NAME), tlv(0x01, Buffer.from([0xff])), tlv(0x04, generalNames));
  const attributes = tlv(0xa0, seq(oid(OID_EXTENSION_REQUEST), set(seq(sanExt))));
  return seq(tlv(0x02, Buffer.from([0])), seq(), spkiDer, attributes);
}

/** A PKCS#10 CSR (PEM) for `uri`, signed ECDSA-SHA256 with `key` (a P-256 private key). */
export function encodeCsr(key: crypto.KeyObject, uri: string): string {
  const spki = crypto.createPublicKey(key).export({ type: 'spki', format: 'der' });
  const info = requestInfo(spki, uri);
  const sig = crypto.sign('sha256', info, { key, dsaEncoding: 'der' });
  const der = seq(info, seq(oid(OID_ECDSA_WITH_SHA256)), tlv(0x03, Buffer.from([0]), sig));
  const b64 = der.toString('base64').match(/.{1,64}/g)!.join('\n');
  return `-----BEGIN CERTIFICATE REQUEST-----\n${b64}\n-----END CERTIFICATE REQUEST-----\n`;
}

/** A new P-256 key (PKCS#8 PEM) and a CSR (PEM) for `spiffeId`. Throws ID_BAD_IDENTITY for a malformed ID. */
export async function createCsr(spiffeId: string): Promise<{ keyPem: string; csrPem: string }> {
  if (!parseSpiffeId(spiffeId)) {
    throw new AmbitError('ID_BAD_IDENTITY', `cannot request a certificate for ${JSON.stringify(spiffeId)}: expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`);
  }
  // IA5String: a SPIFFE ID that passed parseSpiffeId is ASCII, but refuse rather than mis-encode.
  if (!/^[\x20-\x7e]+$/.test(spiffeId)) {
    throw new AmbitError('ID_BAD_IDENTITY', `cannot request a certificate for ${JSON.stringify(spiffeId)}: a SPIFFE ID must be printable ASCII`);
  }
  const { privateKey } = await generateKeyPair('ec', { namedCurve: 'P-256' });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  return { keyPem, csrPem: encodeCsr(privateKey, spiffeId) };
}
