/**
 * Beyond Istio: a policy change applies to connections already open. Each allowed inbound
 * connection keeps the facts it was authorized with; when the policy generation moves, every open
 * one is decided again and the now-denied ones are closed (record first, with the reason, then both
 * sides reset: RST_STREAM on HBONE, TCP RST on plaintext).
 */
import { logger } from '../../shared/log.ts';
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
}

/** Watches the state; re-checks open connections once per policy generation change. */
export class PolicyRechecker {
  #o: PolicyRecheckerOptions;
  #generation: number;
  #off: (() => void) | undefined;
  #scheduled = false;

  constructor(o: PolicyRecheckerOptions) {
    this.#o = o;
    this.#generation = o.state.policyGeneration;
  }

  start(): void {
    this.#off ??= this.#o.state.onChange(() => {
      if (this.#o.state.policyGeneration === this.#generation || this.#scheduled) return;
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
      log.info('closed connections a policy change denies', { closed, generation: this.#generation, ms: Math.round(performance.now() - started) });
    }
    return closed;
  }
}
