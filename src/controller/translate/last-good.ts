/**
 * Keeps the last good version of each policy object across snapshots: when an edit makes a policy
 * invalid, its previous version stays in force (a typo must not silently drop a DENY or widen an
 * ALLOW) until the object is fixed or deleted. Memory only: a restarted controller starts from
 * what is valid now.
 */
import type { AuthorizationRecord, PeerAuthenticationRecord } from '../../api/policy.ts';
import type { PolicyTranslation } from './policies.ts';

export interface KeptPolicy {
  /** `AuthorizationPolicy ns/name`, as problems name objects */
  object: string;
  field: string;
  message: string;
}

export class LastGoodPolicies {
  #authz = new Map<string, AuthorizationRecord>();
  #peer = new Map<string, PeerAuthenticationRecord>();

  /**
   * The records to push for this translation: its good ones, plus the previous version of each
   * object that is now invalid (listed in `kept`). Objects that are gone are forgotten.
   */
  merge(t: PolicyTranslation): PolicyTranslation & { kept: KeptPolicy[] } {
    const authz = new Map(t.authorizations.map((r) => [`AuthorizationPolicy ${r.namespace}/${r.name}`, r]));
    const peer = new Map(t.peerAuthentications.map((r) => [`PeerAuthentication ${r.namespace}/${r.name}`, r]));
    const kept: KeptPolicy[] = [];
    for (const p of t.problems) {
      const prevA = this.#authz.get(p.object);
      if (prevA && !authz.has(p.object)) {
        authz.set(p.object, prevA);
        kept.push({ object: p.object, field: p.field, message: p.message });
      }
      const prevP = this.#peer.get(p.object);
      if (prevP && !peer.has(p.object)) {
        peer.set(p.object, prevP);
        kept.push({ object: p.object, field: p.field, message: p.message });
      }
    }
    this.#authz = authz;
    this.#peer = peer;
    const byKey = (a: { namespace: string; name: string }, b: { namespace: string; name: string }) =>
      a.namespace < b.namespace ? -1 : a.namespace > b.namespace ? 1 : a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
    return {
      ...t,
      authorizations: [...authz.values()].sort(byKey),
      peerAuthentications: [...peer.values()].sort(byKey),
      kept,
    };
  }
}
