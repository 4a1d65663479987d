/**
 * Per-identity workload certificates for the node agent.
 *
 * - get() returns cached credentials while valid; concurrent calls for one identity share one
 *   signing request.
 * - Renewal happens at half-life (measured from when we received the certificate, since notBefore
 *   is backdated for clock skew). Failures retry with exponential backoff (500 ms .. 150 s, jitter).
 * - onRotate callbacks receive every newly issued Credentials (first issuance and renewals). Nothing
 *   is torn down: connections established with an older certificate keep working until they close.
 * - While an identity has no usable certificate and a retry is pending, get() fails fast with the
 *   last error (ID_UNAVAILABLE) instead of piling requests onto a failing CA.
 * - Trust bundle: the roots of the latest CreateCertificate answer are the node's bundle. When they
 *   change (the CA added a root, an operator rotated roots), every held identity is re-based onto
 *   them (same certificate, new rootsPem, announced through onRotate) so TLS contexts built from
 *   here on verify peers with the new bundle; an identity the new roots no longer anchor is renewed
 *   now. Open connections keep the context they were made with.
 */
import { spiffeId } from '../../api/mesh.ts';
import { AmbitError, errorMessage } from '../../shared/errors.ts';
import { logger } from '../../shared/log.ts';
import { isValidNamespace, isValidServiceAccount, isValidTrustDomain } from '../../shared/tls.ts';
import { createCsr } from './csr.ts';
import { validateIssued, validateRoots, type Credentials, type CsrSigner } from './credentials.ts';
import { anchoredBy, rootFingerprints } from './trust-bundle.ts';

export type { Credentials, CsrSigner } from './credentials.ts';

const log = logger('identity');
const MAX_TIMER_MS = 2 ** 31 - 1;

export type CertificateState = 'valid' | 'renewing' | 'expired' | 'failed';
export interface CertificateStatus {
  identity: string;
  serial?: string;
  notBefore?: Date;
  notAfter?: Date;
  state: CertificateState;
  lastError?: string;
  /** When the next renewal or retry is due. */
  nextAttemptAt?: Date;
}

export interface WorkloadIdentityRef { namespace: string; serviceAccount: string }

export interface CertificateManagerOptions {
  signer: CsrSigner;
  trustDomain: string;
  /** Requested certificate TTL; default 24 h. */
  ttlSeconds?: number;
  /** Retry backoff; defaults 500 ms .. 150 s. Tests use small values. */
  backoff?: { initialMs?: number; maxMs?: number };
}

interface Entry {
  identity: string;
  creds?: Credentials;
  inflight?: Promise<Credentials>;
  timer?: NodeJS.Timeout;
  dueAt?: number;
  failures: number;
  lastError?: unknown;
  gone: boolean;
}

export class CertificateManager {
  #signer: CsrSigner;
  #td: string;
  #ttl: number;
  #backoffInitial: number;
  #backoffMax: number;
  #entries = new Map<string, Entry>();
  #rotateCbs = new Set<(c: Credentials) => void>();
  #bundleCbs = new Set<(rootsPem: string) => void>();
  /** The node's trust bundle: roots of the latest issuance (PEM, as validateIssued normalised it). */
  #roots: string | undefined;
  #stopped = false;

  constructor(o: CertificateManagerOptions) {
    if (!isValidTrustDomain(o.trustDomain)) throw new AmbitError('ID_BAD_IDENTITY', `trust domain ${JSON.stringify(o.trustDomain)} is invalid`);
    this.#signer = o.signer;
    this.#td = o.trustDomain;
    this.#ttl = o.ttlSeconds ?? 24 * 3600;
    this.#backoffInitial = o.backoff?.initialMs ?? 500;
    this.#backoffMax = o.backoff?.maxMs ?? 150_000;
  }

  get trustDomain(): string { return this.#td; }

  identityOf(id: WorkloadIdentityRef): string {
    if (!isValidNamespace(id.namespace) || !isValidServiceAccount(id.serviceAccount)) {
      throw new AmbitError('ID_BAD_IDENTITY', `invalid workload identity namespace=${JSON.stringify(id.namespace)} serviceAccount=${JSON.stringify(id.serviceAccount)}: both must be Kubernetes names`);
    }
    return spiffeId(this.#td, id.namespace, id.serviceAccount);
  }

  /** Credentials for the identity, fetched or renewed as needed. Rejects with AmbitError (ID_*). */
  get(id: WorkloadIdentityRef): Promise<Credentials> {
    if (this.#stopped) return Promise.reject(new AmbitError('ID_STOPPED', 'the certificate manager is stopped'));
    let identity: string;
    try {
      identity = this.identityOf(id);
    } catch (err) {
      return Promise.reject(err);
    }
    let e = this.#entries.get(identity);
    if (!e) {
      e = { identity, failures: 0, gone: false };
      this.#entries.set(identity, e);
    }
    if (e.creds && e.creds.notAfter.getTime() > Date.now()) return Promise.resolve(e.creds);
    if (e.inflight) return e.inflight;
    if (e.failures > 0 && e.timer) {
      const inMs = Math.max(0, (e.dueAt ?? Date.now()) - Date.now());
      return Promise.reject(new AmbitError('ID_UNAVAILABLE',
        `no valid certificate for ${identity}: ${errorMessage(e.lastError)} (retry ${e.failures} in ${Math.ceil(inMs / 1000)}s)`, { cause: e.lastError }));
    }
    return this.#fetch(e);
  }

  /** Currently held, unexpired credentials of an identity (SPIFFE ID), without fetching. */
  current(identity: string): Credentials | undefined {
    const c = this.#entries.get(identity)?.creds;
    return c && c.notAfter.getTime() > Date.now() ? c : undefined;
  }

  /** The current trust bundle (PEM roots), once any certificate was issued. */
  get trustBundle(): string | undefined { return this.#roots; }

  /**
   * The controller's trust bundle, pushed with its config: taken like the roots of an issuance, so a
   * new root is trusted as soon as the agent is connected. Throws ID_BAD_BUNDLE (bundle unchanged).
   */
  adoptTrustBundle(rootsPem: string): void {
    this.#adoptRoots(validateRoots(rootsPem), 'controller');
  }

  /** Called with the new roots whenever the trust bundle changes (after identities were re-based). */
  onTrustBundle(cb: (rootsPem: string) => void): () => void {
    this.#bundleCbs.add(cb);
    return () => { this.#bundleCbs.delete(cb); };
  }

  /**
   * Called with every newly issued Credentials, and with re-based ones (same certificate and serial,
   * new rootsPem) when the trust bundle changes: either way, build new TLS contexts from them.
   */
  onRotate(cb: (c: Credentials) => void): () => void {
    this.#rotateCbs.add(cb);
    return () => { this.#rotateCbs.delete(cb); };
  }

  /** Drops an identity no local pod uses any more: no renewals, no retries. */
  forget(id: WorkloadIdentityRef | string): void {
    const identity = typeof id === 'string' ? id : this.identityOf(id);
    const e = this.#entries.get(identity);
    if (!e) return;
    e.gone = true;
    if (e.timer) clearTimeout(e.timer);
    this.#entries.delete(identity);
    log.info('forgot identity', { identity });
  }

  list(): CertificateStatus[] {
    const now = Date.now();
    return [...this.#entries.values()].map((e) => {
      const c = e.creds;
      let state: CertificateState;
      if (c && c.notAfter.getTime() <= now) state = 'expired';
      else if (c) state = e.inflight || e.failures > 0 ? 'renewing' : 'valid';
      else state = e.failures > 0 ? 'failed' : 'renewing';
      return {
        identity: e.identity,
        serial: c?.serial,
        notBefore: c?.notBefore,
        notAfter: c?.notAfter,
        state,
        lastError: e.failures > 0 ? errorMessage(e.lastError) : undefined,
        nextAttemptAt: e.timer && e.dueAt !== undefined ? new Date(e.dueAt) : undefined,
      };
    }).sort((a, b) => a.identity.localeCompare(b.identity));
  }

  /**
   * Retries every failing identity now instead of waiting out its backoff, e.g. when the control
   * plane connection comes back. Backoff state is kept: a failure continues the same progression.
   */
  retryNow(): void {
    if (this.#stopped) return;
    for (const e of this.#entries.values()) {
      if (e.failures === 0 || e.inflight) continue;
      if (e.timer) clearTimeout(e.timer);
      e.timer = undefined;
      this.#fetch(e).catch(() => { /* logged and rescheduled in #fetch */ });
    }
  }

  stop(): void {
    this.#stopped = true;
    for (const e of this.#entries.values()) {
      if (e.timer) clearTimeout(e.timer);
      e.timer = undefined;
    }
  }

  #fetch(e: Entry): Promise<Credentials> {
    const p = this.#issue(e.identity).then(
      (creds) => {
        e.inflight = undefined;
        if (e.gone || this.#stopped) return creds;
        const receivedAt = Date.now();
        const renewed = e.creds !== undefined;
        e.creds = creds;
        e.failures = 0;
        e.lastError = undefined;
        // Half-life from receipt: notBefore is backdated and must not shorten the lifetime.
        this.#schedule(e, receivedAt + Math.max(50, (creds.notAfter.getTime() - receivedAt) / 2));
        log.info(renewed ? 'certificate renewed' : 'certificate issued', { identity: e.identity, serial: creds.serial, notAfter: creds.notAfter.toISOString() });
        this.#announce(creds);
        this.#adoptRoots(creds.rootsPem, e.identity);
        return creds;
      },
      (err: unknown) => {
        e.inflight = undefined;
        if (e.gone || this.#stopped) throw err;
        e.failures++;
        e.lastError = err;
        const base = Math.min(this.#backoffMax, this.#backoffInitial * 2 ** Math.min(e.failures - 1, 30));
        const delay = Math.min(this.#backoffMax, base * (0.75 + Math.random() * 0.5)); // +-25 % jitter
        this.#schedule(e, Date.now() + delay);
        log.warn('certificate request failed', { identity: e.identity, attempt: e.failures, retryInMs: Math.round(delay), error: errorMessage(err) });
        throw err;
      },
    );
    e.inflight = p;
    return p;
  }

  #announce(creds: Credentials): void {
    for (const cb of this.#rotateCbs) {
      try { cb(creds); } catch (err) { log.warn('onRotate callback failed', { identity: creds.identity, error: errorMessage(err) }); }
    }
  }

  /** A new bundle from an issuance for `from`: re-base the other identities onto it. */
  #adoptRoots(rootsPem: string, from: string): void {
    const previous = this.#roots;
    if (previous === rootsPem) return;
    this.#roots = rootsPem;
    if (previous === undefined) return; // the first bundle: nothing was built from another one
    const before = rootFingerprints(previous);
    const after = rootFingerprints(rootsPem);
    if (before.join() === after.join()) return; // same roots, other order or encoding
    log.info('trust bundle changed', {
      from,
      added: after.filter((f) => !before.includes(f)).join(',') || 'none',
      removed: before.filter((f) => !after.includes(f)).join(',') || 'none',
      roots: after.length,
    });
    for (const e of this.#entries.values()) {
      const c = e.creds;
      if (!c || c.rootsPem === rootsPem) continue;
      const rebased: Credentials = { ...c, rootsPem };
      e.creds = rebased;
      if (!anchoredBy(rebased.certChainPem, rootsPem)) {
        // Peers with the new bundle would refuse this certificate: get one from the current CA now.
        log.warn('certificate no longer chains to the trust bundle; renewing now', { identity: e.identity, serial: c.serial });
        if (!e.inflight) this.#schedule(e, Date.now());
      }
      this.#announce(rebased);
    }
    for (const cb of this.#bundleCbs) {
      try { cb(rootsPem); } catch (err) { log.warn('onTrustBundle callback failed', { error: errorMessage(err) }); }
    }
  }

  async #issue(identity: string): Promise<Credentials> {
    const { keyPem, csrPem } = await createCsr(identity);
    let res: { certChainPem: string; rootsPem: string };
    try {
      res = await this.#signer(csrPem, this.#ttl);
    } catch (err) {
      if (err instanceof AmbitError) throw err;
      throw new AmbitError('ID_SIGN_FAILED', `the CA did not sign a certificate for ${identity}: ${errorMessage(err)}`, { cause: err });
    }
    return validateIssued(identity, keyPem, res);
  }

  #schedule(e: Entry, at: number): void {
    if (e.timer) clearTimeout(e.timer);
    e.dueAt = at;
    const fire = () => {
      if (e.gone || this.#stopped) return;
      const left = at - Date.now();
      if (left > 5) { // long delays are chunked (setTimeout's 24.8-day limit)
        e.timer = setTimeout(fire, Math.min(left, MAX_TIMER_MS)).unref();
        return;
      }
      e.timer = undefined;
      if (!e.inflight) this.#fetch(e).catch(() => { /* logged and rescheduled in #fetch */ });
    };
    e.timer = setTimeout(fire, Math.min(Math.max(0, at - Date.now()), MAX_TIMER_MS)).unref();
  }
}
