/**
 * TLS settings for HBONE (Istio's wire): TLS 1.3 only, ALPN h2, mutual authentication with SPIFFE
 * workload certificates, no SNI. Plus small helpers to read SPIFFE identities off certificates.
 *
 * Server side: the chain is checked against the mesh roots by OpenSSL (requestCert +
 * rejectUnauthorized); the caller then decides what the peer identity may do (peerSpiffeId,
 * checkPeerTrustDomain). Client side: the server must present exactly the identity the route
 * expects (checkServerIdentity), host names play no role.
 */
import * as tls from 'node:tls';
import { X509Certificate } from 'node:crypto';

/** What a TLS endpoint needs; the identity layer's Credentials is a superset. */
export interface TlsCredentials {
  identity?: string;
  certChainPem: string;
  keyPem: string;
  rootsPem: string;
}

export const HBONE_ALPN = 'h2';
/** Istio's ztunnel defaults (AES-GCM), plus ChaCha20 for CPUs without AES instructions. */
export const HBONE_CIPHERS = 'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256';
export const HBONE_CURVES = 'X25519:P-256';

function common(c: TlsCredentials) {
  return {
    minVersion: 'TLSv1.3' as const,
    maxVersion: 'TLSv1.3' as const,
    ALPNProtocols: [HBONE_ALPN],
    ciphers: HBONE_CIPHERS,
    ecdhCurve: HBONE_CURVES,
    ca: c.rootsPem,
    cert: c.certChainPem,
    key: c.keyPem,
  };
}

export type HboneServerOptions = tls.TlsOptions & {
  requestCert: true;
  rejectUnauthorized: true;
  ALPNProtocols: string[];
};

/** Options for tls.createServer / new tls.TLSSocket(sock, { isServer: true, ... }) on :15008. */
export function hboneServerOptions(c: TlsCredentials): HboneServerOptions {
  return { ...common(c), requestCert: true, rejectUnauthorized: true };
}

const clientContexts = new WeakMap<TlsCredentials, tls.SecureContext>();

/**
 * The client SecureContext for a credentials object, built once (parsing keys and certificates on
 * every connect costs more than the handshake bookkeeping). Keyed by object identity: credentials
 * are immutable, a rotation produces a new object.
 */
export function hboneClientContext(c: TlsCredentials): tls.SecureContext {
  let ctx = clientContexts.get(c);
  if (!ctx) {
    const { ALPNProtocols: _alpn, ...ctxOptions } = common(c);
    ctx = tls.createSecureContext(ctxOptions);
    clientContexts.set(c, ctx);
  }
  return ctx;
}

/**
 * Options for tls.connect to a peer's :15008. The peer must present a certificate chaining to our
 * roots whose URI SAN is exactly `expectedPeerIdentity`. No SNI is sent (tls.connect only sends one
 * when `servername` is set; '' keeps it off even for callers such as http2.connect that would
 * otherwise default it to the host). The key material travels in a cached `secureContext`, so to
 * change ca/cert/key replace `secureContext` (options like `ca` next to it are ignored by node).
 */
export function hboneClientOptions(c: TlsCredentials, expectedPeerIdentity: string): tls.ConnectionOptions {
  return {
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    ALPNProtocols: [HBONE_ALPN],
    secureContext: hboneClientContext(c),
    rejectUnauthorized: true,
    servername: '',
    checkServerIdentity: (_host: string, cert: tls.PeerCertificate) => checkPeerIdentity(cert, expectedPeerIdentity),
  };
}

/** undefined when the certificate's SPIFFE identity is `expected`, an Error naming both otherwise. */
export function checkPeerIdentity(cert: tls.PeerCertificate | X509Certificate, expected: string): Error | undefined {
  const got = uriSans(cert);
  if (got.length === 1 && got[0] === expected) return undefined;
  const what = got.length === 0 ? 'no URI SAN' : got.length === 1 ? got[0] : `several URI SANs (${got.join(', ')})`;
  const err = new Error(`peer identity mismatch: expected ${expected}, got ${what}`) as Error & { code: string };
  err.code = 'ERR_TLS_CERT_ALTNAME_INVALID';
  return err;
}

/**
 * URI SANs of a certificate. Accepts node:crypto X509Certificate, the object tls getPeerCertificate()
 * returns, or a PEM/DER certificate.
 */
export function uriSans(cert: tls.PeerCertificate | X509Certificate | string | Buffer): string[] {
  let text: string | undefined;
  if (cert instanceof X509Certificate) text = cert.subjectAltName;
  else if (typeof cert === 'string' || Buffer.isBuffer(cert)) text = new X509Certificate(cert).subjectAltName;
  else text = cert.subjectaltname;
  if (!text) return [];
  return splitAltNames(text).filter((n) => n.startsWith('URI:')).map((n) => n.slice(4));
}

/**
 * Node prints SANs as `URI:a, DNS:b`; a value containing a comma or quote is printed as a JSON
 * string (`URI:"a,b"`). Parse both forms.
 */
export function splitAltNames(text: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < text.length) {
    const colon = text.indexOf(':', i);
    if (colon < 0) break;
    const kind = text.slice(i, colon);
    let j = colon + 1;
    let value: string;
    if (text[j] === '"') {
      let k = j + 1;
      while (k < text.length && text[k] !== '"') k += text[k] === '\\' ? 2 : 1;
      value = JSON.parse(text.slice(j, k + 1)) as string;
      j = k + 1;
    } else {
      const end = text.indexOf(', ', j);
      value = text.slice(j, end < 0 ? text.length : end);
      j = end < 0 ? text.length : end;
    }
    out.push(`${kind}:${value}`);
    i = text.startsWith(', ', j) ? j + 2 : j;
  }
  return out;
}

/** The SPIFFE ID (URI SAN) of the authenticated peer, or undefined (no cert, none or several URIs). */
export function peerSpiffeId(s: tls.TLSSocket): string | undefined {
  const cert = s.getPeerX509Certificate();
  if (!cert) return undefined;
  const uris = uriSans(cert).filter((u) => u.startsWith('spiffe://'));
  return uris.length === 1 ? uris[0] : undefined;
}

export interface SpiffeIdentity { trustDomain: string; namespace: string; serviceAccount: string }

const TRUST_DOMAIN = /^[a-z0-9._-]{1,255}$/;
const NAMESPACE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const SERVICE_ACCOUNT = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** Parses `spiffe://<td>/ns/<ns>/sa/<sa>`; undefined for anything else (including odd names). */
export function parseSpiffeId(id: string): SpiffeIdentity | undefined {
  const m = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(id);
  if (!m) return undefined;
  const [, trustDomain, namespace, serviceAccount] = m;
  if (!isValidTrustDomain(trustDomain) || !NAMESPACE.test(namespace) || !SERVICE_ACCOUNT.test(serviceAccount)) return undefined;
  return { trustDomain, namespace, serviceAccount };
}

export function isValidTrustDomain(td: string): boolean {
  return TRUST_DOMAIN.test(td);
}
export function isValidNamespace(ns: string): boolean {
  return NAMESPACE.test(ns);
}
export function isValidServiceAccount(sa: string): boolean {
  return SERVICE_ACCOUNT.test(sa);
}

/**
 * Whether the authenticated peer's SPIFFE identity is in trust domain `td`. Returns the parsed
 * identity when it is, undefined otherwise (no certificate, not a workload SPIFFE ID, other domain).
 */
export function checkPeerTrustDomain(s: tls.TLSSocket, td: string): (SpiffeIdentity & { spiffeId: string }) | undefined {
  if (!s.authorized) return undefined; // the chain did not verify (a server may verify by itself)
  const id = peerSpiffeId(s);
  if (id === undefined) return undefined;
  const parsed = parseSpiffeId(id);
  if (!parsed || parsed.trustDomain !== td) return undefined;
  return { ...parsed, spiffeId: id };
}

/** OpenSSL verify codes that mean "this chain does not lead to any root we trust". */
const UNKNOWN_CA_CODES = new Set([
  'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'CERT_SIGNATURE_FAILURE',
]);

/**
 * Why a peer's certificate failed verification, in words an operator can act on: expired (with
 * notAfter), not yet valid (notBefore), unknown CA (with the issuer), or the OpenSSL code.
 * Node drops a socket it rejected without saying why, so HBONE endpoints verify with
 * rejectUnauthorized off and refuse through this (and checkPeerTrustDomain / checkPeerIdentity).
 */
export function describeVerifyError(code: string | undefined, cert: X509Certificate | undefined, now = Date.now()): string {
  if (!cert) return 'no certificate presented';
  const who = `${uriSans(cert).join(', ') || 'no URI SAN'}, serial ${cert.serialNumber}`;
  if (code === 'CERT_HAS_EXPIRED') {
    return cert.validToDate.getTime() <= now
      ? `certificate expired: notAfter ${cert.validToDate.toISOString()} (${who})`
      : `a certificate in the peer's chain expired (leaf ${who})`;
  }
  if (code === 'CERT_NOT_YET_VALID') return `certificate not yet valid: notBefore ${cert.validFromDate.toISOString()} (${who})`;
  if (code && UNKNOWN_CA_CODES.has(code)) {
    return `unknown CA: the certificate (${who}) issued by "${cert.issuer.replace(/\n/g, ', ')}" does not chain to the mesh trust bundle (${code})`;
  }
  return `certificate verification failed: ${code ?? 'unknown error'} (${who})`;
}

/**
 * The server side's verdict on an HBONE client after the handshake (server made with
 * rejectUnauthorized: false): undefined plus the identity when the chain verified against our
 * roots and the SPIFFE id is of trust domain `td`, else the reason to log and refuse.
 */
export function verifyHboneClient(s: tls.TLSSocket, td: string): { identity: string; reason?: undefined } | { identity?: undefined; reason: string } {
  const cert = s.getPeerX509Certificate();
  if (!s.authorized) return { reason: describeVerifyError(String(s.authorizationError ?? ''), cert) };
  const id = peerSpiffeId(s);
  if (id === undefined) return { reason: `certificate carries no SPIFFE workload identity (URI SAN: ${cert ? uriSans(cert).join(', ') || 'none' : 'none'})` };
  const parsed = parseSpiffeId(id);
  if (!parsed) return { reason: `peer identity ${id} is not a workload SPIFFE id (spiffe://<trust-domain>/ns/<ns>/sa/<sa>)` };
  if (parsed.trustDomain !== td) return { reason: `foreign trust domain: peer identity ${id} is not in trust domain ${td}` };
  return { identity: id };
}

/**
 * The client side's verdict on an HBONE server after the handshake (connected with
 * rejectUnauthorized: false): undefined when the chain verified and the server is exactly
 * `expected`, else the reason (expired / unknown CA / identity mismatch).
 */
export function verifyHboneServer(s: tls.TLSSocket, expected: string): string | undefined {
  const cert = s.getPeerX509Certificate();
  const code = String(s.authorizationError ?? '');
  if (s.authorized) return undefined;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID' && cert) return checkPeerIdentity(cert, expected)?.message ?? code;
  return describeVerifyError(code, cert);
}
