/**
 * Small PKI helpers shared by the CA files: the @peculiar/x509 setup (it needs a Reflect metadata
 * polyfill and a WebCrypto provider), key conversion, serials, PEM handling.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import * as crypto from 'node:crypto';

x509.cryptoProvider.set(crypto.webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export type CryptoKey = crypto.webcrypto.CryptoKey;
export type CryptoKeyPair = crypto.webcrypto.CryptoKeyPair;
export type Algorithm = crypto.webcrypto.Algorithm;

export { x509 };

export const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;
export const ECDSA_SHA256 = { name: 'ECDSA', hash: 'SHA-256' } as const;

/** A fresh P-256 key pair, extractable (we write the private key out as PKCS#8 PEM). */
export async function generateP256(): Promise<CryptoKeyPair> {
  return (await crypto.webcrypto.subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as CryptoKeyPair;
}

export async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await crypto.webcrypto.subtle.exportKey('pkcs8', key));
  return toPem('PRIVATE KEY', der);
}

export function toPem(label: string, der: Buffer): string {
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

/** All PEM blocks of one label in `text`, each normalised to end with a newline. */
export function splitPem(text: string, label = 'CERTIFICATE'): string[] {
  const re = new RegExp(`-----BEGIN ${label}-----[\\s\\S]*?-----END ${label}-----`, 'g');
  return (text.match(re) ?? []).map((b) => b + '\n');
}

/** A random positive 128-bit serial as hex (top bit clear so DER keeps it positive and 16 bytes). */
export function randomSerial(): string {
  const b = crypto.randomBytes(16);
  b[0] = (b[0] & 0x7f) | 0x40; // positive, and a non-zero first byte keeps it 16 bytes long
  return b.toString('hex');
}

/** Signing parameters that fit a CA key (EC P-256/P-384 or RSA). */
export function signingAlgorithmFor(key: crypto.KeyObject): { importAlg: Algorithm & Record<string, unknown>; signAlg: Algorithm & Record<string, unknown> } | undefined {
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return { importAlg: { name: 'ECDSA', namedCurve: 'P-256' }, signAlg: { name: 'ECDSA', hash: 'SHA-256' } };
    if (curve === 'secp384r1') return { importAlg: { name: 'ECDSA', namedCurve: 'P-384' }, signAlg: { name: 'ECDSA', hash: 'SHA-384' } };
    return undefined;
  }
  if (key.asymmetricKeyType === 'rsa') {
    return { importAlg: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, signAlg: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } };
  }
  return undefined;
}

/** Whether a private key and a certificate hold the same public key. */
export function keyMatchesCert(key: crypto.KeyObject, cert: crypto.X509Certificate): boolean {
  const a = crypto.createPublicKey(key).export({ type: 'spki', format: 'der' });
  const b = cert.publicKey.export({ type: 'spki', format: 'der' });
  return a.equals(b);
}

/** Whether a public key (SPKI) is EC P-256. */
export function isP256(key: crypto.KeyObject): boolean {
  return key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1';
}
