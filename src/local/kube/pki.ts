/**
 * Certificates for the local control plane: one CA that signs etcd's and the API server's serving
 * certificates and the client certificates (API server -> etcd, admin, controller-manager), plus
 * the service-account token signing key. All P-256. Written once per state dir and reused, so a
 * kubeconfig stays valid across restarts.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as crypto from 'node:crypto';
import { join } from 'node:path';
import { generateP256, privateKeyPem, randomSerial, x509, type CryptoKey } from '../../controller/ca/pki.ts';

/** First address of the service range (10.96.0.0/16): the `kubernetes` Service's ClusterIP. */
export const API_SERVICE_IP = '10.96.0.1';

export interface KubePki {
  dir: string;
  caCert: string;
  caKey: string;
  /** Serving cert for both etcd and the API server (127.0.0.1, localhost, kubernetes.default...). */
  servingCert: string;
  servingKey: string;
  /** The API server's client cert towards etcd. */
  etcdClientCert: string;
  etcdClientKey: string;
  adminCert: string;
  adminKey: string;
  controllerManagerCert: string;
  controllerManagerKey: string;
  saKey: string;
  saPub: string;
}

const DAY_MS = 86_400_000;

export function pkiPaths(dir: string): KubePki {
  const p = (n: string) => join(dir, n);
  return {
    dir,
    caCert: p('ca.crt'), caKey: p('ca.key'),
    servingCert: p('serving.crt'), servingKey: p('serving.key'),
    etcdClientCert: p('etcd-client.crt'), etcdClientKey: p('etcd-client.key'),
    adminCert: p('admin.crt'), adminKey: p('admin.key'),
    controllerManagerCert: p('controller-manager.crt'), controllerManagerKey: p('controller-manager.key'),
    saKey: p('sa.key'), saPub: p('sa.pub'),
  };
}

async function importKey(pem: string): Promise<CryptoKey> {
  const der = crypto.createPrivateKey(pem).export({ type: 'pkcs8', format: 'der' });
  return crypto.webcrypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']) as Promise<CryptoKey>;
}

interface Leaf { cert: string; key: string; subject: string; server: boolean; client: boolean }

export async function ensurePki(dir: string): Promise<KubePki> {
  const p = pkiPaths(dir);
  if (existsSync(p.saPub)) return p; // written last: everything before it exists
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const now = Date.now();
  const notBefore = new Date(now - 3_600_000);
  const notAfter = new Date(now + 365 * DAY_MS);

  const caKeys = await generateP256();
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(), name: 'CN=ambit-local-kubernetes-ca', notBefore, notAfter,
    keys: caKeys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
    ],
  });
  writeFileSync(p.caCert, ca.toString('pem') + '\n');
  writeFileSync(p.caKey, await privateKeyPem(caKeys.privateKey), { mode: 0o600 });
  const caSigner = await importKey(readFileSync(p.caKey, 'utf8'));

  const leaves: Leaf[] = [
    { cert: p.servingCert, key: p.servingKey, subject: 'CN=kube-apiserver', server: true, client: false },
    { cert: p.etcdClientCert, key: p.etcdClientKey, subject: 'CN=kube-apiserver-etcd-client', server: false, client: true },
    // system:masters is bound to cluster-admin by the API server's bootstrap policy.
    { cert: p.adminCert, key: p.adminKey, subject: 'O=system:masters, CN=kubernetes-admin', server: false, client: true },
    { cert: p.controllerManagerCert, key: p.controllerManagerKey, subject: 'CN=system:kube-controller-manager', server: false, client: true },
  ];
  for (const l of leaves) {
    const keys = await generateP256();
    const usages = [...(l.server ? [x509.ExtendedKeyUsage.serverAuth] : []), ...(l.client ? [x509.ExtendedKeyUsage.clientAuth] : [])];
    const extensions: x509.Extension[] = [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(usages, false),
    ];
    if (l.server) {
      extensions.push(new x509.SubjectAlternativeNameExtension([
        { type: 'ip', value: '127.0.0.1' }, { type: 'ip', value: API_SERVICE_IP },
        ...['localhost', 'kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local'].map((value) => ({ type: 'dns' as const, value })),
      ], false));
    }
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(), subject: l.subject, issuer: ca.subject, notBefore, notAfter,
      publicKey: keys.publicKey, signingKey: caSigner, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' }, extensions,
    });
    writeFileSync(l.cert, cert.toString('pem') + '\n');
    writeFileSync(l.key, await privateKeyPem(keys.privateKey), { mode: 0o600 });
  }

  // Service-account tokens: the API server signs them (TokenRequest), the controller-manager's
  // token controller too; both verify with the public half.
  const sa = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  writeFileSync(p.saKey, sa.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
  writeFileSync(p.saPub, sa.publicKey.export({ type: 'spki', format: 'pem' }) as string);
  return p;
}
