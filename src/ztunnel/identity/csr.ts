/**
 * Key and CSR generation for one workload identity: a fresh ECDSA P-256 key per certificate, a CSR
 * whose only content is the SPIFFE URI SAN (Istio's shape; the CA ignores everything else).
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import * as crypto from 'node:crypto';
import { AmbitError } from '../../shared/errors.ts';
import { parseSpiffeId } from '../../shared/tls.ts';

x509.cryptoProvider.set(crypto.webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' };

/** A new P-256 key (PKCS#8 PEM) and a CSR (PEM) for `spiffeId`. Throws ID_BAD_IDENTITY for a malformed ID. */
export async function createCsr(spiffeId: string): Promise<{ keyPem: string; csrPem: string }> {
  if (!parseSpiffeId(spiffeId)) {
    throw new AmbitError('ID_BAD_IDENTITY', `cannot request a certificate for ${JSON.stringify(spiffeId)}: expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`);
  }
  const keys = (await crypto.webcrypto.subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as crypto.webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }], true)],
  });
  const der = Buffer.from(await crypto.webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const keyPem = crypto.createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }).export({ type: 'pkcs8', format: 'pem' }) as string;
  return { keyPem, csrPem: csr.toString('pem') + '\n' };
}
