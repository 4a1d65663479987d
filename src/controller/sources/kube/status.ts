/**
 * Status on the mesh policy resources: an `Accepted` condition per AuthorizationPolicy and
 * PeerAuthentication (True, or False with the refused field named; warnings — what L4 cannot
 * enforce as written — in the message of an accepted one), written through the status subresource,
 * plus a Warning Event when an object is refused, so `kubectl describe` shows it. Only the leader
 * writes; writes happen only when the condition differs from what the object already carries, so
 * a restart or a fail-over rewrites nothing that is already right.
 */
import type { KubeObject } from '../../../api/k8s.ts';
import { errorMessage } from '../../../shared/errors.ts';
import { logger } from '../../../shared/log.ts';
import { translatePolicyObject, type PolicyOptions } from '../../translate/policies.ts';
import { MERGE_PATCH, statusOf, type KubeClient } from './client.ts';
import { objectPath, type WatchedResource } from './resources.ts';

const log = logger('controller.status');

export const CONDITION_ACCEPTED = 'Accepted';
const MAX_MESSAGE = 4000;

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  observedGeneration?: number;
  lastTransitionTime?: string;
}

/** The Accepted condition the controller wants on a policy object (no transition time). */
export function acceptedCondition(o: KubeObject, opts: PolicyOptions): Condition {
  const r = translatePolicyObject(o, opts);
  const generation = o.metadata.generation;
  const clip = (m: string) => (m.length > MAX_MESSAGE ? `${m.slice(0, MAX_MESSAGE - 3)}...` : m);
  if (r.problem) {
    return { type: CONDITION_ACCEPTED, status: 'False', reason: 'Invalid', message: clip(`${r.problem.field}: ${r.problem.message}`), observedGeneration: generation };
  }
  if (r.warnings.length > 0) {
    return { type: CONDITION_ACCEPTED, status: 'True', reason: 'UnsupportedValue', message: clip(`accepted, but not enforced as written: ${r.warnings.join('; ')}`), observedGeneration: generation };
  }
  return { type: CONDITION_ACCEPTED, status: 'True', reason: 'Accepted', message: 'accepted', observedGeneration: generation };
}

function currentConditions(o: KubeObject): Condition[] {
  const st = o.status as { conditions?: unknown } | undefined;
  return Array.isArray(st?.conditions) ? (st.conditions as Condition[]) : [];
}

function same(a: Condition | undefined, b: Condition): boolean {
  return a !== undefined && a.status === b.status && a.reason === b.reason && a.message === b.message && a.observedGeneration === b.observedGeneration;
}

export class StatusWriter {
  #client: KubeClient;
  #opts: PolicyOptions;
  #component: string;
  #instance: string;
  #running: Promise<void> | undefined;
  #again: (() => [WatchedResource, KubeObject][]) | undefined;
  /** uid/generation/message of refusals already announced with an Event. */
  #announced = new Set<string>();
  /** uid -> the condition written and the resourceVersion it was written over: no rewrite until the watch shows it. */
  #written = new Map<string, { want: string; rv: string | undefined }>();
  /** Failures already logged (once each). */
  #failed = new Set<string>();
  /** Writes done (for tests and the CLI). */
  writes = 0;
  events = 0;

  constructor(client: KubeClient, opts: PolicyOptions & { instance: string }) {
    this.#client = client;
    this.#opts = { rootNamespace: opts.rootNamespace, trustDomain: opts.trustDomain };
    this.#component = 'ambit-controller';
    this.#instance = opts.instance;
  }

  /**
   * Bring every object's condition up to date. `objects` is read when the pass starts; a call during
   * a pass makes one more pass afterwards (with the latest objects), never two at once.
   */
  reconcile(objects: () => [WatchedResource, KubeObject][]): Promise<void> {
    if (this.#running) {
      this.#again = objects;
      return this.#running;
    }
    this.#running = (async () => {
      let next: typeof objects | undefined = objects;
      while (next) {
        this.#again = undefined;
        for (const [r, o] of next()) await this.#one(r, o);
        next = this.#again;
      }
    })().finally(() => { this.#running = undefined; });
    return this.#running;
  }

  async idle(): Promise<void> {
    while (this.#running) await this.#running;
  }

  async #one(r: WatchedResource, o: KubeObject): Promise<void> {
    const want = acceptedCondition(o, this.#opts);
    const conditions = currentConditions(o);
    const have = conditions.find((c) => c.type === CONDITION_ACCEPTED);
    if (same(have, want)) return;
    const uid = o.metadata.uid ?? '';
    const wantKey = JSON.stringify(want);
    const w = this.#written.get(uid);
    if (w && w.want === wantKey && w.rv === o.metadata.resourceVersion) return;
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const cond: Condition = { ...want, lastTransitionTime: have && have.status === want.status && have.lastTransitionTime ? have.lastTransitionTime : now };
    const status = {
      observedGeneration: o.metadata.generation,
      conditions: [...conditions.filter((c) => c.type !== CONDITION_ACCEPTED), cond],
    };
    const name = `${o.kind} ${o.metadata.namespace}/${o.metadata.name}`;
    const path = `${objectPath(r, o.metadata.namespace ?? 'default', o.metadata.name)}/status`;
    try {
      // The uid precondition: never write status onto a re-created object of the same name.
      await this.#client.request('PATCH', path, { metadata: { uid: o.metadata.uid }, status }, { contentType: MERGE_PATCH });
      this.writes++;
      this.#written.set(uid, { want: wantKey, rv: o.metadata.resourceVersion });
      if (this.#written.size > 10_000) this.#written.clear();
      this.#failed.delete(name);
      log.info('status updated', { object: name, accepted: cond.status, reason: cond.reason });
    } catch (err) {
      const code = statusOf(err);
      if (code === 404 || code === 409) return; // deleted or replaced meanwhile: the next snapshot says
      const key = `${name}\0${errorMessage(err)}`;
      if (!this.#failed.has(key)) log.warn('cannot write status', { object: name, error: errorMessage(err) });
      this.#failed.add(key);
      return;
    }
    if (cond.status === 'False') await this.#event(o, cond);
  }

  async #event(o: KubeObject, cond: Condition): Promise<void> {
    const key = `${o.metadata.uid}\0${o.metadata.generation}\0${cond.message}`;
    if (this.#announced.has(key)) return;
    this.#announced.add(key);
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const ns = o.metadata.namespace ?? 'default';
    const event = {
      apiVersion: 'v1', kind: 'Event',
      metadata: { generateName: `${o.metadata.name}.`, namespace: ns },
      involvedObject: { apiVersion: o.apiVersion, kind: o.kind, name: o.metadata.name, namespace: ns, uid: o.metadata.uid, resourceVersion: o.metadata.resourceVersion },
      type: 'Warning',
      reason: 'Refused',
      message: `refused: ${cond.message}; fix it and apply again (an earlier accepted version of it, if any, stays in force)`,
      source: { component: this.#component },
      reportingComponent: this.#component,
      reportingInstance: this.#instance,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    };
    try {
      await this.#client.request('POST', `/api/v1/namespaces/${encodeURIComponent(ns)}/events`, event);
      this.events++;
    } catch (err) {
      log.warn('cannot record event', { object: `${o.kind} ${ns}/${o.metadata.name}`, error: errorMessage(err) });
    }
  }
}
