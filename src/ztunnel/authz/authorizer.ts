/**
 * The data path's Authorizer, read from the agent's StateView on every decision (policies change at
 * run time): PeerAuthentication first (STRICT refuses plaintext for that port), then the
 * AuthorizationPolicies that apply to the destination workload.
 */
import type { Workload } from '../../api/mesh.ts';
import type { AuthorizationRecord } from '../../api/policy.ts';
import type { StateView } from '../state/store.ts';
import type { AuthzContext, AuthzResult, Authorizer } from '../proxy/context.ts';
import { evaluateAuthorization } from './evaluate.ts';
import { effectiveMtls } from './peer-auth.ts';

/** The destination workload as the state knows it now (labels may have changed since the connection opened). */
export function destinationWorkload(state: Pick<StateView, 'workloadByUid'>, ctx: AuthzContext): Workload {
  const w = state.workloadByUid(ctx.pod.uid) ?? ctx.workload;
  if (w) return w;
  const p = ctx.pod;
  return {
    uid: p.uid, name: p.name, namespace: p.namespace, addresses: p.ips, node: '', serviceAccount: p.serviceAccount,
    trustDomain: '', protocol: 'HBONE', ready: true, labels: {}, canonicalName: p.name, canonicalRevision: 'latest', services: {},
  };
}

/**
 * Policies by namespace (MESH ones first, then the namespace's own), rebuilt when the policy
 * generation moves: with many policies most belong to other namespaces and need no look.
 */
class PolicyIndex {
  #generation = -1;
  #mesh: AuthorizationRecord[] = [];
  #byNamespace = new Map<string, AuthorizationRecord[]>();

  candidates(state: StateView, namespace: string): readonly AuthorizationRecord[] {
    if (state.policyGeneration !== this.#generation) {
      this.#generation = state.policyGeneration;
      this.#mesh = [];
      const own = new Map<string, AuthorizationRecord[]>();
      for (const p of state.authorizations()) {
        if (p.scope === 'MESH') this.#mesh.push(p);
        else (own.get(p.namespace) ?? own.set(p.namespace, []).get(p.namespace)!).push(p);
      }
      this.#byNamespace = new Map([...own].map(([ns, list]) => [ns, [...this.#mesh, ...list]]));
    }
    return this.#byNamespace.get(namespace) ?? this.#mesh;
  }
}

export function stateAuthorizer(state: StateView): Authorizer {
  const index = new PolicyIndex();
  return (ctx: AuthzContext): AuthzResult => {
    const workload = destinationWorkload(state, ctx);
    if (ctx.transport === 'plaintext') {
      const mtls = effectiveMtls(workload, ctx.dstPort, state.peerAuthentications());
      if (mtls.mode === 'STRICT') {
        return {
          allow: false,
          policy: mtls.policy,
          reason: `plaintext refused: PeerAuthentication ${mtls.policy} requires mTLS (STRICT) for port ${ctx.dstPort}`,
        };
      }
    }
    const d = evaluateAuthorization(
      { workload, srcIdentity: ctx.srcIdentity, srcIp: ctx.srcIp, dstIp: ctx.dstIp, dstPort: ctx.dstPort },
      index.candidates(state, workload.namespace),
    );
    return { allow: d.allow, policy: d.policy, reason: d.reason };
  };
}
