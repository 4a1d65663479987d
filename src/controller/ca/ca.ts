/**
 * The mesh certificate authority (runs in the controller). It signs:
 *  - workload certificates from CSRs: ECDSA P-256, only a URI SAN spiffe://<td>/ns/<ns>/sa/<sa>;
 *    the controller decides WHETHER a caller may have an identity, this class only how it looks;
 *  - node agent client certificates (O=ambit-agent, CN=<node>) for the control-plane channel;
 *  - the controller's gRPC server certificate.
 */
import * as crypto from 'node:crypto';
import * as net from 'node:net';
import type * as tls from 'node:tls';
import { spiffeId } from '../../api/mesh.ts';
import { AmbitError } from '../../shared/errors.ts';
import { isValidTrustDomain } from '../../shared/tls.ts';
import { parseWorkloadCsr, type CsrIdentity } from './csr.ts';
import { x509, generateP256, privateKeyPem, randomSerial } from './pki.ts';
import { loadOrCreateSigningMaterial, type SigningMaterial } from './root-store.ts';

export const DEFAULT_TRUST_DOMAIN = 'cluster.local';
export const DEFAULT_WORKLOAD_TTL_SECONDS = 24 * 3600;
/** Upper bound for a requested workload TTL (Istio's max workload cert TTL default is 90 days). */
export const MAX_WORKLOAD_TTL_SECONDS = 90 * 24 * 3600;
export const AGENT_ORGANIZATION = 'ambit-agent';
export const AGENT_NAMESPACE = 'istio-system';
export const AGENT_SERVICE_ACCOUNT = 'ambit-agent';
const AGENT_TTL_MS = 365 * 24 * 3600 * 1000;
const CLOCK_SKEW_MS = 60 * 1000;

export interface SignedChain { certChainPem: string; rootsPem: string }
export interface IssuedCredentials { certPem: string; keyPem: string; rootsPem: string }

const { KeyUsageFlags, ExtendedKeyUsage } = x509;

export class CertificateAuthority {
  readonly trustDomain: string;
  readonly rootCertPem: string;
  #m: SigningMaterial;
  #aki: x509.AuthorityKeyIdentifierExtension | undefined;

  private constructor(trustDomain: string, m: SigningMaterial) {
    this.trustDomain = trustDomain;
    this.#m = m;
    this.rootCertPem = m.rootsPem;
    const ski = m.caCertX509.getExtension(x509.SubjectKeyIdentifierExtension);
    this.#aki = ski ? new x509.AuthorityKeyIdentifierExtension(ski.keyId) : undefined;
  }

  /**
   * Loads ca-cert.pem/ca-key.pem (and optional root-cert.pem/cert-chain.pem) from `dir`, or creates
   * a new ECDSA P-256 root there. Throws AmbitError CA_BAD_ROOT naming the file at fault.
   */
  static async loadOrCreate(dir: string, opts: { trustDomain?: string } = {}): Promise<CertificateAuthority> {
    const td = opts.trustDomain ?? DEFAULT_TRUST_DOMAIN;
    if (!isValidTrustDomain(td)) {
      throw new AmbitError('CA_BAD_TRUST_DOMAIN', `trust domain ${JSON.stringify(td)} is invalid: use lower-case letters, digits, '.', '-', '_'`);
    }
    return new CertificateAuthority(td, await loadOrCreateSigningMaterial(dir, td));
  }

  /** The signing certificate (root, or intermediate for a plugged-in CA). */
  get caCert(): crypto.X509Certificate { return this.#m.caCert; }

  /** Verifies a workload CSR and returns the identity it asks for. Throws CA_BAD_CSR / CA_FOREIGN_TRUST_DOMAIN. */
  parseCsrIdentity(csrPem: string): CsrIdentity {
    const { trustDomain, namespace, serviceAccount, spiffeId } = parseWorkloadCsr(csrPem, this.trustDomain);
    return { trustDomain, namespace, serviceAccount, spiffeId };
  }

  /** Signs a workload CSR (checked as in parseCsrIdentity). ttlSeconds defaults to 24 h. */
  async signWorkloadCsr(csrPem: string, ttlSeconds: number = DEFAULT_WORKLOAD_TTL_SECONDS): Promise<SignedChain> {
    if (!Number.isFinite(ttlSeconds) || ttlSeconds <= 0) {
      throw new AmbitError('CA_BAD_TTL', `requested certificate TTL ${ttlSeconds}s is invalid: must be a positive number of seconds`);
    }
    const ttl = Math.min(ttlSeconds, MAX_WORKLOAD_TTL_SECONDS);
    const now = Date.now();
    return this.signWorkloadCsrWithValidity(csrPem, new Date(now - CLOCK_SKEW_MS), new Date(now + ttl * 1000));
  }

  /**
   * Like signWorkloadCsr with explicit validity bounds (also in the past). For tests and tools
   * (e.g. making an expired certificate); the controller uses signWorkloadCsr.
   */
  async signWorkloadCsrWithValidity(csrPem: string, notBefore: Date, notAfter: Date): Promise<SignedChain> {
    const csr = parseWorkloadCsr(csrPem, this.trustDomain);
    const leaf = await this.#issue({
      subject: '',
      spki: csr.spki,
      notBefore,
      notAfter,
      extensions: [
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: csr.spiffeId }], true),
        new x509.KeyUsagesExtension(KeyUsageFlags.digitalSignature | KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([ExtendedKeyUsage.serverAuth, ExtendedKeyUsage.clientAuth]),
      ],
    });
    return { certChainPem: leaf + this.#m.intermediatesPem, rootsPem: this.#m.rootsPem };
  }

  /** A client certificate + new key for the node agent of `nodeName` (control-plane channel). 1 year. */
  async issueAgentCredentials(nodeName: string): Promise<IssuedCredentials> {
    if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(nodeName)) {
      throw new AmbitError('CA_BAD_NODE_NAME', `node name ${JSON.stringify(nodeName)} is invalid: use a DNS subdomain name (lower-case letters, digits, '-', '.')`);
    }
    const keys = await generateP256();
    const now = Date.now();
    const certPem = await this.#issue({
      subject: `O=${AGENT_ORGANIZATION}, CN=${nodeName}`,
      spki: Buffer.from(await crypto.webcrypto.subtle.exportKey('spki', keys.publicKey)),
      notBefore: new Date(now - CLOCK_SKEW_MS),
      notAfter: new Date(now + AGENT_TTL_MS),
      extensions: [
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId(this.trustDomain, AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT) }]),
        new x509.KeyUsagesExtension(KeyUsageFlags.digitalSignature | KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([ExtendedKeyUsage.clientAuth]),
      ],
    });
    return { certPem: certPem + this.#m.intermediatesPem, keyPem: await privateKeyPem(keys.privateKey), rootsPem: this.#m.rootsPem };
  }

  /** A server certificate + new key for the controller's gRPC endpoint; `hosts` are IPs and/or DNS names. 1 year. */
  async issueServerCredentials(hosts: string[]): Promise<IssuedCredentials> {
    if (hosts.length === 0) throw new AmbitError('CA_BAD_HOSTS', 'issueServerCredentials needs at least one IP address or DNS name');
    const names = hosts.map((h) => {
      if (net.isIP(h)) return { type: 'ip' as const, value: h };
      if (/^(\*\.)?[a-zA-Z0-9]([-a-zA-Z0-9.]{0,251}[a-zA-Z0-9])?$/.test(h)) return { type: 'dns' as const, value: h };
      throw new AmbitError('CA_BAD_HOSTS', `server certificate host ${JSON.stringify(h)} is neither an IP address nor a DNS name`);
    });
    const keys = await generateP256();
    const now = Date.now();
    const certPem = await this.#issue({
      subject: 'O=ambit, CN=ambit-controller',
      spki: Buffer.from(await crypto.webcrypto.subtle.exportKey('spki', keys.publicKey)),
      notBefore: new Date(now - CLOCK_SKEW_MS),
      notAfter: new Date(now + AGENT_TTL_MS),
      extensions: [
        new x509.SubjectAlternativeNameExtension(names),
        new x509.KeyUsagesExtension(KeyUsageFlags.digitalSignature | KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([ExtendedKeyUsage.serverAuth]),
      ],
    });
    return { certPem: certPem + this.#m.intermediatesPem, keyPem: await privateKeyPem(keys.privateKey), rootsPem: this.#m.rootsPem };
  }

  /**
   * The node name of an agent client certificate issued by THIS CA (signature checked), or undefined.
   * Use this when the certificate did not come through a TLS handshake that already verified it.
   */
  verifiedAgentNode(cert: AgentCertInput): string | undefined {
    const c = toX509(cert);
    if (!c || !c.checkIssued(this.#m.caCert) || !c.verify(this.#m.caCert.publicKey)) return undefined;
    const now = Date.now();
    if (new Date(c.validFrom).getTime() > now || new Date(c.validTo).getTime() < now) return undefined;
    return agentNodeFromCert(c);
  }

  async #issue(o: { subject: string; spki: Buffer; notBefore: Date; notAfter: Date; extensions: x509.Extension[] }): Promise<string> {
    const m = this.#m;
    const publicKey = new x509.PublicKey(o.spki);
    const extensions = [...o.extensions, new x509.BasicConstraintsExtension(false, undefined, true)];
    if (this.#aki) extensions.push(this.#aki);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: o.subject,
      issuer: m.caCertX509.subjectName,
      notBefore: o.notBefore,
      notAfter: o.notAfter,
      publicKey,
      signingKey: m.signingKey,
      signingAlgorithm: m.signingAlgorithm,
      extensions,
    });
    return cert.toString('pem') + '\n';
  }
}

/** A certificate as PEM (string), DER (Buffer), node:crypto X509Certificate, or tls getPeerCertificate()'s object. */
export type AgentCertInput = string | Buffer | crypto.X509Certificate | tls.PeerCertificate;

function toX509(cert: AgentCertInput): crypto.X509Certificate | undefined {
  try {
    if (cert instanceof crypto.X509Certificate) return cert;
    if (typeof cert === 'string' || Buffer.isBuffer(cert)) return new crypto.X509Certificate(cert);
    if (cert && Buffer.isBuffer(cert.raw)) return new crypto.X509Certificate(cert.raw);
  } catch {
    return undefined;
  }
  return undefined;
}

/**
 * The node name (CN) of an agent client certificate (subject O=ambit-agent), or undefined for any
 * other certificate. Does NOT check the signature: use it on a peer certificate that a TLS handshake
 * with the mesh roots already verified (or use CertificateAuthority.verifiedAgentNode).
 * Accepts PEM, DER, node:crypto X509Certificate, or the object tls.TLSSocket.getPeerCertificate() returns.
 */
export function agentNodeFromCert(cert: AgentCertInput): string | undefined {
  const c = toX509(cert);
  if (!c) return undefined;
  const fields = new Map<string, string[]>();
  for (const line of (c.subject ?? '').split('\n')) {
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    const k = line.slice(0, eq);
    fields.set(k, [...(fields.get(k) ?? []), line.slice(eq + 1)]);
  }
  const o = fields.get('O') ?? [];
  const cn = fields.get('CN') ?? [];
  if (o.length !== 1 || o[0] !== AGENT_ORGANIZATION || cn.length !== 1 || cn[0] === '') return undefined;
  return cn[0];
}
