/**
 * The CA's signing material on disk, in the layout Istio uses for a plugged-in CA:
 *   ca-cert.pem   the signing certificate (self-signed root, or an intermediate)
 *   ca-key.pem    its private key (mode 0600)
 *   root-cert.pem optional: the trust anchor when ca-cert.pem is an intermediate
 *   cert-chain.pem optional: ca-cert.pem up to (not including) the root, sent along with leaves
 * When neither ca-cert.pem nor ca-key.pem exists, a new ECDSA P-256 root (10 years) is created.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { AmbitError } from '../../shared/errors.ts';
import { logger } from '../../shared/log.ts';
import { type CryptoKey, type Algorithm, x509, generateP256, privateKeyPem, randomSerial, ECDSA_SHA256, keyMatchesCert, signingAlgorithmFor, splitPem } from './pki.ts';

const log = logger('ca');

export const CA_CERT_FILE = 'ca-cert.pem';
export const CA_KEY_FILE = 'ca-key.pem';
export const ROOT_CERT_FILE = 'root-cert.pem';
export const CERT_CHAIN_FILE = 'cert-chain.pem';
const ROOT_VALIDITY_MS = 10 * 365 * 24 * 3600 * 1000;
const CLOCK_SKEW_MS = 60 * 1000;

export interface SigningMaterial {
  /** The signing certificate (node:crypto and @peculiar/x509 views). */
  caCert: crypto.X509Certificate;
  caCertX509: x509.X509Certificate;
  /** WebCrypto key used to sign, and its algorithm. */
  signingKey: CryptoKey;
  signingAlgorithm: Algorithm & Record<string, unknown>;
  /** PEM of the trust anchor(s) handed to workloads. */
  rootsPem: string;
  /** PEM of the certificates between a leaf and the root ('' when ca-cert.pem is the root). */
  intermediatesPem: string;
}

function badRoot(file: string, msg: string, cause?: unknown): AmbitError {
  return new AmbitError('CA_BAD_ROOT', `CA file ${file}: ${msg}`, { cause, details: { file } });
}

async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw badRoot(file, `cannot read (${(err as Error).message})`, err);
  }
}

function parseCert(file: string, pem: string): crypto.X509Certificate {
  const blocks = splitPem(pem);
  if (blocks.length === 0) throw badRoot(file, 'no PEM CERTIFICATE block found');
  try {
    return new crypto.X509Certificate(blocks[0]);
  } catch (err) {
    throw badRoot(file, `not a valid certificate (${(err as Error).message})`, err);
  }
}

/** Loads the signing material from `dir`, creating a new root there when there is none. */
export async function loadOrCreateSigningMaterial(dir: string, trustDomain: string): Promise<SigningMaterial> {
  const certFile = path.join(dir, CA_CERT_FILE);
  const keyFile = path.join(dir, CA_KEY_FILE);
  let certPem = await readIfExists(certFile);
  let keyPem = await readIfExists(keyFile);
  if (certPem === undefined && keyPem === undefined) {
    await createRoot(dir, trustDomain);
    certPem = await readIfExists(certFile);
    keyPem = await readIfExists(keyFile);
  }
  if (certPem === undefined) throw badRoot(certFile, `missing while ${CA_KEY_FILE} exists; provide both files or neither`);
  if (keyPem === undefined) throw badRoot(keyFile, `missing while ${CA_CERT_FILE} exists; provide both files or neither`);
  return loadMaterial(dir, certPem, keyPem);
}

async function loadMaterial(dir: string, certPem: string, keyPem: string): Promise<SigningMaterial> {
  const certFile = path.join(dir, CA_CERT_FILE);
  const keyFile = path.join(dir, CA_KEY_FILE);
  const caCert = parseCert(certFile, certPem);
  let key: crypto.KeyObject;
  try {
    key = crypto.createPrivateKey(keyPem);
  } catch (err) {
    throw badRoot(keyFile, `not a valid private key (${(err as Error).message})`, err);
  }
  if (!keyMatchesCert(key, caCert)) throw badRoot(keyFile, `does not match the certificate in ${certFile} (mismatched key/cert pair)`);
  if (!caCert.ca) throw badRoot(certFile, 'is not a CA certificate (basicConstraints CA:true is required)');
  if (new Date(caCert.validTo).getTime() < Date.now()) throw badRoot(certFile, `expired on ${caCert.validTo}; rotate the root`);
  const alg = signingAlgorithmFor(key);
  if (!alg) throw badRoot(keyFile, `unsupported key type ${key.asymmetricKeyType} (use ECDSA P-256/P-384 or RSA)`);
  let signingKey: CryptoKey;
  try {
    signingKey = key.toCryptoKey(alg.importAlg, false, ['sign']);
  } catch (err) {
    throw badRoot(keyFile, `cannot use the key for signing (${(err as Error).message})`, err);
  }

  const rootFile = path.join(dir, ROOT_CERT_FILE);
  const chainFile = path.join(dir, CERT_CHAIN_FILE);
  const rootPem = await readIfExists(rootFile);
  const chainPem = await readIfExists(chainFile);
  let rootsPem: string;
  let intermediatesPem = '';
  if (rootPem === undefined || parseCert(rootFile, rootPem).fingerprint256 === caCert.fingerprint256) {
    if (!caCert.checkIssued(caCert) || !caCert.verify(caCert.publicKey)) {
      throw badRoot(certFile, `is not self-signed; for an intermediate CA also provide ${ROOT_CERT_FILE}`);
    }
    rootsPem = splitPem(certPem)[0];
  } else {
    const roots = splitPem(rootPem).map((p) => parseCert(rootFile, p));
    const chain = chainPem !== undefined ? splitPem(chainPem).map((p) => parseCert(chainFile, p)) : [caCert];
    if (chain.length === 0 || chain[0].fingerprint256 !== caCert.fingerprint256) chain.unshift(caCert);
    for (let i = 0; i + 1 < chain.length; i++) {
      if (!chain[i].verify(chain[i + 1].publicKey)) throw badRoot(chainFile, `certificate ${i} is not signed by certificate ${i + 1}`);
    }
    const last = chain[chain.length - 1];
    if (!roots.some((r) => last.checkIssued(r) && last.verify(r.publicKey))) {
      throw badRoot(rootFile, `does not contain the issuer of ${last.subject.replace(/\n/g, ', ')}`);
    }
    rootsPem = roots.map((r) => r.toString()).join('');
    intermediatesPem = chain.map((c) => c.toString()).join('');
  }
  return {
    caCert,
    caCertX509: new x509.X509Certificate(splitPem(certPem)[0]),
    signingKey,
    signingAlgorithm: alg.signAlg,
    rootsPem,
    intermediatesPem,
  };
}

async function createRoot(dir: string, trustDomain: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const keys = await generateP256();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: `O=${trustDomain}, CN=Ambit Root CA`,
    notBefore: new Date(now - CLOCK_SKEW_MS),
    notAfter: new Date(now + ROOT_VALIDITY_MS),
    keys,
    signingAlgorithm: ECDSA_SHA256,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const keyPem = await privateKeyPem(keys.privateKey);
  // Write under temporary names and link into place: a concurrent creator loses cleanly (EEXIST)
  // and then loads the winner's files.
  const tag = `${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  const tmpKey = path.join(dir, `.${CA_KEY_FILE}.${tag}`);
  const tmpCert = path.join(dir, `.${CA_CERT_FILE}.${tag}`);
  try {
    await fs.writeFile(tmpKey, keyPem, { mode: 0o600 });
    await fs.writeFile(tmpCert, cert.toString('pem') + '\n', { mode: 0o644 });
    try {
      await fs.link(tmpKey, path.join(dir, CA_KEY_FILE));
      await fs.link(tmpCert, path.join(dir, CA_CERT_FILE));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      log.info('another process created the CA root first; using it', { dir });
      return;
    }
    log.info('created a new root CA', { dir, trustDomain, notAfter: cert.notAfter.toISOString() });
  } catch (err) {
    throw badRoot(dir, `cannot write the new root (${(err as Error).message})`, err);
  } finally {
    await fs.rm(tmpKey, { force: true });
    await fs.rm(tmpCert, { force: true });
  }
}
