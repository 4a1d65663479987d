/**
 * Beyond Istio: a policy change applies to connections already open. Each allowed inbound
 * connection keeps the facts it was authorized with; when the policy generation moves, every open
 * one is decided again and the now-denied ones are closed (record first, with the reason, then both
 * sides reset: RST_STREAM on HBONE, TCP RST on plaintext).
 */
import { logger } from '../../shared/log.ts';
import type { Workload } from '../../api/mesh.ts';
import type { StateView } from '../state/store.ts';
import type { ConnectionRecord } from '../proxy/connections.ts';
import type { AuthzContext, AuthzResult, Authorizer } from '../proxy/context.ts';
import { errorMessage } from '../../shared/errors.ts';

const log = logger('authz');

const contexts = new WeakMap<ConnectionRecord, AuthzContext>();

/** Remember what an inbound connection was authorized with (app-connect, once allowed). */
export function rememberAuthz(rec: ConnectionRecord, ctx: AuthzContext): void {
  contexts.set(rec, ctx);
}

export function authzContextOf(rec: ConnectionRecord): AuthzContext | undefined {
  return contexts.get(rec);
}

/** Close text for a connection a policy change denied; tests and operators match on the code. */
export function policyChangeError(reason: string | undefined, policy: string | undefined): string {
  const why = reason ?? 'denied by authorization policy';
  return `ZT_POLICY_CHANGED: closed after a policy change: ${why}${policy && !why.includes(policy) ? ` (${policy})` : ''}`;
}

/** Decide every open inbound connection again; returns how many were closed. */
export function recheckOpen(records: Iterable<ConnectionRecord>, authorize: Authorizer): number {
  let closed = 0;
  for (const rec of records) {
    if (rec.closed || rec.info.direction !== 'inbound') continue;
    const ctx = contexts.get(rec);
    if (!ctx) continue;
    let d: AuthzResult;
    try {
      d = authorize(ctx);
    } catch (err) {
      d = { allow: false, reason: `authorization failed: ${errorMessage(err)}` }; // fail closed, as for new connections
    }
    if (d.allow) continue;
    rec.set({ policy: d.policy });
    rec.close(policyChangeError(d.reason, d.policy));
    rec.destroy();
    closed++;
  }
  return closed;
}

export interface PolicyRecheckerOptions {
  state: StateView;
  authorize: Authorizer;
  /** Open connection records of the pods this agent serves. */
  records: () => Iterable<ConnectionRecord>;
  /** Uids of the pods this agent serves: their labels/enrollment decide which selector policies apply. */
  localUids?: () => Iterable<string>;
}

/** What of a destination workload the policy decision depends on besides the policies. */
function policyFacts(w: Workload | undefined): string {
  if (!w) return '';
  const labels = Object.keys(w.labels).sort().map((k) => [k, w.labels[k]]);
  return JSON.stringify([w.namespace, w.protocol, labels]);
}

/**
 * Watches the state; re-checks open connections once per policy generation change, and when the
 * labels, namespace or enrollment of a workload this agent serves change (a selector may now match
 * or stop matching). Unchanged workload records keep their object (the store freezes each upsert),
 * so an unrelated change costs one Map lookup per local pod.
 */
export class PolicyRechecker {
  #o: PolicyRecheckerOptions;
  #generation: number;
  #off: (() => void) | undefined;
  #scheduled = false;
  /** Local uid -> the record last looked at and its policy facts. */
  #seen = new Map<string, { w: Workload | undefined; facts: string }>();

  constructor(o: PolicyRecheckerOptions) {
    this.#o = o;
    this.#generation = o.state.policyGeneration;
  }

  /** Whether a served workload's policy facts changed since the last look (first sight counts). */
  #localChanged(): boolean {
    const uids = this.#o.localUids?.();
    if (!uids) return false;
    let changed = false;
    const live = new Set<string>();
    for (const uid of uids) {
      live.add(uid);
      const w = this.#o.state.workloadByUid(uid);
      const prev = this.#seen.get(uid);
      if (prev && prev.w === w) continue;
      const facts = policyFacts(w);
      if (!prev || prev.facts !== facts) changed = true;
      this.#seen.set(uid, { w, facts });
    }
    for (const uid of this.#seen.keys()) if (!live.has(uid)) this.#seen.delete(uid);
    return changed;
  }

  start(): void {
    this.#localChanged(); // baseline
    this.#off ??= this.#o.state.onChange(() => {
      const local = this.#localChanged();
      if ((!local && this.#o.state.policyGeneration === this.#generation) || this.#scheduled) return;
      // After the current batch's other listeners: one pass per burst of changes.
      this.#scheduled = true;
      setImmediate(() => {
        this.#scheduled = false;
        this.recheck();
      });
    });
  }

  stop(): void {
    this.#off?.();
    this.#off = undefined;
  }

  recheck(): number {
    this.#generation = this.#o.state.policyGeneration;
    const started = performance.now();
    const closed = recheckOpen(this.#o.records(), this.#o.authorize);
    if (closed > 0) {
      log.info('closed connections a policy or workload label change denies', { closed, generation: this.#generation, ms: Math.round(performance.now() - started) });
    }
    return closed;
  }
}
