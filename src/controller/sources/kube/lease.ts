/**
 * Leader election through a coordination.k8s.io/v1 Lease, the way Kubernetes' own controllers do
 * it: the holder renews the lease every retry period; a candidate takes it over once the holder has
 * not renewed for the lease duration. Expiry is judged by when *this* replica last saw the lease
 * change (its own clock), never by the holder's timestamps, so clock skew between replicas does not
 * matter. Writes carry the resourceVersion read, so two candidates cannot both win. A leader that
 * cannot renew within the renew deadline steps down before anyone else may take over.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { errorMessage } from '../../../shared/errors.ts';
import { logger } from '../../../shared/log.ts';
import { statusOf, type KubeClient } from './client.ts';

const log = logger('controller.lease');

export interface LeaseOptions {
  namespace: string;
  name?: string;
  /** Unique per replica; default hostname + random. */
  identity?: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
}

interface LeaseObject {
  apiVersion: 'coordination.k8s.io/v1';
  kind: 'Lease';
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: { holderIdentity?: string; leaseDurationSeconds?: number; acquireTime?: string; renewTime?: string; leaseTransitions?: number };
}

/** Lease times are MicroTime: RFC 3339 with microseconds. */
export function microTime(d: Date): string {
  return d.toISOString().replace('Z', '000Z');
}

export class LeaderElector {
  readonly namespace: string;
  readonly name: string;
  readonly identity: string;
  #client: KubeClient;
  #durationMs: number;
  #renewDeadlineMs: number;
  #retryMs: number;
  #leader = false;
  #lastRenew = 0;
  /** The holder/renewTime last seen, and when (local clock) it last changed. */
  #observed = '';
  #observedAt = 0;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #stopped = true;
  #lastError = '';
  #onChange: (leader: boolean) => void = () => {};

  constructor(client: KubeClient, opts: LeaseOptions) {
    this.#client = client;
    this.namespace = opts.namespace;
    this.name = opts.name ?? 'ambit-controller';
    this.identity = opts.identity ?? `${process.env.POD_NAME ?? hostname()}_${randomUUID().slice(0, 8)}`;
    this.#durationMs = opts.leaseDurationMs ?? 15_000;
    this.#renewDeadlineMs = opts.renewDeadlineMs ?? Math.round(this.#durationMs * 2 / 3);
    this.#retryMs = opts.retryPeriodMs ?? Math.max(100, Math.round(this.#durationMs / 7.5));
  }

  get isLeader(): boolean { return this.#leader; }

  /** Start campaigning; `onChange` hears every gain and loss of leadership. */
  start(onChange: (leader: boolean) => void): void {
    this.#onChange = onChange;
    this.#stopped = false;
    this.#tick();
  }

  /**
   * Stop; a leader releases the lease so another replica takes over without waiting for expiry
   * (`release: false` leaves it to expire, as a crash would).
   */
  async stop(opts: { release?: boolean } = {}): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
    if (this.#leader && opts.release === false) this.#set(false);
    if (this.#leader) {
      try {
        const lease = await this.#get();
        if (lease?.spec.holderIdentity === this.identity) {
          const now = microTime(new Date());
          await this.#client.request('PUT', this.#path(), { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, renewTime: now } });
        }
      } catch (err) {
        log.warn('could not release the lease; another replica takes over when it expires', { lease: `${this.namespace}/${this.name}`, error: errorMessage(err) });
      }
      this.#set(false);
    }
  }

  #path(name?: string): string {
    return `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(this.namespace)}/leases${name === undefined ? `/${encodeURIComponent(this.name)}` : ''}`;
  }

  #tick(): void {
    if (this.#stopped) return;
    this.#running = this.#attempt().finally(() => {
      this.#running = undefined;
      if (!this.#stopped) {
        this.#timer = setTimeout(() => this.#tick(), this.#retryMs);
        this.#timer.unref();
      }
    });
  }

  async #get(): Promise<LeaseObject | undefined> {
    try {
      return await this.#client.request<LeaseObject>('GET', this.#path());
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw err;
    }
  }

  async #attempt(): Promise<void> {
    try {
      const ok = await this.#tryAcquireOrRenew();
      if (ok) this.#lastRenew = Date.now();
      this.#lastError = '';
      if (this.#leader && !ok) this.#set(false);
      else if (ok) this.#set(true);
    } catch (err) {
      const msg = errorMessage(err);
      if (msg !== this.#lastError) log.warn('lease update failed', { lease: `${this.namespace}/${this.name}`, error: msg });
      this.#lastError = msg;
      // Renewals failing for the renew deadline: step down before the lease can expire for others.
      if (this.#leader && Date.now() - this.#lastRenew > this.#renewDeadlineMs) this.#set(false);
    }
  }

  async #tryAcquireOrRenew(): Promise<boolean> {
    const now = new Date();
    const lease = await this.#get();
    const durationSeconds = Math.max(1, Math.ceil(this.#durationMs / 1000));
    if (!lease) {
      const created: LeaseObject = {
        apiVersion: 'coordination.k8s.io/v1', kind: 'Lease',
        metadata: { name: this.name, namespace: this.namespace },
        spec: { holderIdentity: this.identity, leaseDurationSeconds: durationSeconds, acquireTime: microTime(now), renewTime: microTime(now), leaseTransitions: 0 },
      };
      try {
        await this.#client.request('POST', this.#path(''), created);
        return true;
      } catch (err) {
        if (statusOf(err) === 409) return false; // another replica created it first
        throw err;
      }
    }
    const holder = lease.spec.holderIdentity ?? '';
    const seen = `${holder}\0${lease.spec.renewTime ?? ''}\0${lease.metadata.resourceVersion ?? ''}`;
    if (seen !== this.#observed) {
      this.#observed = seen;
      this.#observedAt = Date.now();
    }
    const heldByOther = holder !== '' && holder !== this.identity;
    const theirDurationMs = (lease.spec.leaseDurationSeconds ?? durationSeconds) * 1000;
    if (heldByOther && Date.now() - this.#observedAt < theirDurationMs) return false;
    const spec = { ...lease.spec, holderIdentity: this.identity, leaseDurationSeconds: durationSeconds, renewTime: microTime(now) };
    if (holder !== this.identity) {
      spec.acquireTime = microTime(now);
      spec.leaseTransitions = (lease.spec.leaseTransitions ?? 0) + 1;
    }
    try {
      // Same resourceVersion as read: a concurrent writer makes this fail with 409 instead of both winning.
      await this.#client.request('PUT', this.#path(), { ...lease, spec });
    } catch (err) {
      if (statusOf(err) === 409) return false;
      throw err;
    }
    return true;
  }

  #set(leader: boolean): void {
    if (leader === this.#leader) return;
    this.#leader = leader;
    log.info(leader ? 'became leader' : 'lost leadership', { lease: `${this.namespace}/${this.name}`, identity: this.identity });
    try {
      this.#onChange(leader);
    } catch (err) {
      log.error('leader change handler failed', { error: errorMessage(err) });
    }
  }
}
