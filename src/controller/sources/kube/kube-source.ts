/**
 * ConfigSource over the Kubernetes API: one informer (list + watch) per watched resource, a
 * debounced snapshot of everything they hold whenever something changed — the same snapshots the
 * manifest directory source emits, so the controller does not know which one it runs on. The first
 * snapshot waits until every core resource has listed (an early, partial snapshot would withdraw
 * workloads from the agents); a mesh CRD that is not installed counts as empty and is reported in
 * the snapshot's errors until it appears.
 *
 * Two replicas may run: both watch and serve agents; a Lease elects the one that writes status
 * conditions and Events on the mesh resources.
 */
import { readFileSync } from 'node:fs';
import type { KubeConfig } from '@kubernetes/client-node';
import type { KubeObject } from '../../../api/k8s.ts';
import { AmbitError, errorMessage } from '../../../shared/errors.ts';
import { logger } from '../../../shared/log.ts';
import type { PolicyOptions } from '../../translate/policies.ts';
import type { ClusterSnapshot, ConfigSource, SourceError } from '../source.ts';
import { KubeClient, loadKubeConfig, type KubeTarget } from './client.ts';
import { LeaderElector, type LeaseOptions } from './lease.ts';
import { Reflector, type ReflectorOptions } from './reflector.ts';
import { WATCHED, type WatchedResource } from './resources.ts';
import { StatusWriter } from './status.ts';

const log = logger('controller.kube');

const SA_NAMESPACE_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

export interface KubeSourceOptions extends ReflectorOptions {
  /** Quiet time after a change before the snapshot (changes arriving together make one snapshot). */
  debounceMs?: number;
  /** Longest a change waits under a steady stream of others. */
  maxDelayMs?: number;
  /** How long start() waits for the first complete list before failing. */
  syncTimeoutMs?: number;
  /** Leader election for status writing; false: never write status (a read-only replica). */
  lease?: Partial<LeaseOptions> | false;
  /** How policies are judged for their status (same as the controller's translation). */
  policy?: PolicyOptions;
}

/** The namespace of the Lease: $POD_NAMESPACE, the pod's own namespace in-cluster, else default. */
export function defaultLeaseNamespace(): string {
  if (process.env.POD_NAMESPACE) return process.env.POD_NAMESPACE;
  try {
    return readFileSync(SA_NAMESPACE_FILE, 'utf8').trim() || 'default';
  } catch {
    return 'default';
  }
}

type Clean = KubeObject;

/** What the snapshot carries of an object: no bookkeeping that changes without meaning anything. */
function clean(r: WatchedResource, o: KubeObject): Clean {
  const { managedFields: _mf, resourceVersion: _rv, ...metadata } = o.metadata as KubeObject['metadata'] & { managedFields?: unknown };
  const { status, ...rest } = o;
  // Our own status writes must not come back as snapshots.
  return r.ownStatus || status === undefined ? { ...rest, metadata } : { ...rest, metadata, status };
}

const byName = (a: KubeObject, b: KubeObject): number =>
  (a.metadata.namespace ?? '').localeCompare(b.metadata.namespace ?? '') || a.metadata.name.localeCompare(b.metadata.name);

export class KubeSource implements ConfigSource {
  readonly kind = 'kubernetes';
  readonly client: KubeClient;
  readonly reflectors: Reflector[];
  readonly elector: LeaderElector | undefined;
  readonly status: StatusWriter;
  #debounceMs: number;
  #maxDelayMs: number;
  #syncTimeoutMs: number;
  #onSnapshot: ((s: ClusterSnapshot) => void) | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #firstPending = 0;
  #last = '';
  #revision = 0;
  #started = false;
  #stopped = false;
  #readyWaiter: (() => void) | undefined;

  constructor(target: KubeTarget | KubeConfig, opts: KubeSourceOptions = {}) {
    const config = 'kubeconfig' in target || 'inCluster' in target ? loadKubeConfig(target as KubeTarget) : target;
    this.client = new KubeClient(config);
    this.#debounceMs = opts.debounceMs ?? 30;
    this.#maxDelayMs = opts.maxDelayMs ?? 500;
    this.#syncTimeoutMs = opts.syncTimeoutMs ?? 60_000;
    this.reflectors = WATCHED.map((r) => new Reflector(this.client, r, () => this.#changed(), opts));
    this.elector = opts.lease === false ? undefined : new LeaderElector(this.client, { namespace: defaultLeaseNamespace(), ...opts.lease });
    this.status = new StatusWriter(this.client, { ...opts.policy, instance: this.elector?.identity ?? 'ambit-controller' });
  }

  get isLeader(): boolean { return this.elector?.isLeader ?? false; }

  /** Lists everything, emits the first snapshot, then keeps watching. */
  async start(onSnapshot: (s: ClusterSnapshot) => void): Promise<void> {
    this.#onSnapshot = onSnapshot;
    this.#stopped = false;
    const ready = new Promise<void>((resolve) => (this.#readyWaiter = resolve));
    for (const r of this.reflectors) r.start();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), this.#syncTimeoutMs)));
    this.#changed();
    const outcome = await Promise.race([ready, timeout]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      const waiting = this.reflectors.filter((r) => !r.ready).map((r) => `${r.resource.kind}${r.lastError ? ` (${r.lastError})` : ''}`);
      await this.stop();
      throw new AmbitError('CONTROLLER_KUBE_SYNC', `no complete list from the API server ${this.client.server} within ${this.#syncTimeoutMs} ms; still waiting for: ${waiting.join(', ')}; check the kubeconfig, that the API server is up, and the controller's RBAC`);
    }
    this.#started = true;
    this.#emit();
    this.elector?.start((leader) => { if (leader) this.#reconcileStatus(); });
    log.info('watching the Kubernetes API', { server: this.client.server, lease: this.elector ? `${this.elector.namespace}/${this.elector.name}` : 'none' });
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#debounce);
    this.#readyWaiter = undefined;
    await Promise.all(this.reflectors.map((r) => r.stop()));
    await this.status.idle();
    await this.elector?.stop();
    this.#started = false;
  }

  /** Test hook: make one resource's watch resume from a stale resourceVersion (the server answers 410). */
  resumeFrom(kind: string, resourceVersion: string): void {
    const r = this.reflectors.find((x) => x.resource.kind === kind);
    if (!r) throw new AmbitError('CONTROLLER_KUBE_RESOURCE', `no watched resource of kind ${kind}`);
    r.resumeFrom(resourceVersion);
  }

  #changed(): void {
    if (this.#stopped) return;
    if (!this.#started) {
      if (this.reflectors.every((r) => r.ready)) this.#readyWaiter?.();
      return;
    }
    const now = Date.now();
    if (this.#firstPending === 0) this.#firstPending = now;
    clearTimeout(this.#debounce);
    const wait = Math.max(0, Math.min(this.#debounceMs, this.#firstPending + this.#maxDelayMs - now));
    this.#debounce = setTimeout(() => this.#emit(), wait);
  }

  #emit(): void {
    this.#firstPending = 0;
    if (this.#stopped) return;
    const objects: KubeObject[] = [];
    const errors: SourceError[] = [];
    for (const r of this.reflectors) {
      if (r.absent) errors.push({ source: `${r.resource.apiVersion} ${r.resource.kind}`, message: r.absent });
      objects.push(...r.objects().map((o) => clean(r.resource, o)).sort(byName));
    }
    if (this.isLeader) this.#reconcileStatus();
    const key = JSON.stringify({ objects, errors });
    if (key === this.#last) return;
    this.#last = key;
    this.#revision++;
    try {
      this.#onSnapshot?.({ objects, errors, revision: this.#revision });
    } catch (err) {
      log.error('snapshot consumer failed', { revision: this.#revision, error: errorMessage(err) });
    }
  }

  #reconcileStatus(): void {
    const policies = () => {
      if (!this.isLeader || this.#stopped) return [];
      const out: [WatchedResource, KubeObject][] = [];
      for (const r of this.reflectors) if (r.resource.ownStatus) for (const o of r.objects()) out.push([r.resource, o]);
      return out;
    };
    void this.status.reconcile(policies);
  }
}
