/**
 * L4 authorization as ztunnel enforces it, evaluated at the destination's agent for the destination
 * workload. Pure: the same code serves the data path, re-checks of open connections and `explain`.
 *
 * Applicable policies: MESH (selector, if any, against the workload's labels in any namespace),
 * NAMESPACE of the workload's namespace, WORKLOAD in its namespace whose selector matches.
 * Any matching DENY denies; else, when any ALLOW applies, one must match; else allow.
 */
import type { Workload } from '../../api/mesh.ts';
import { policyKey, type AuthorizationRecord, type AuthzMatch, type PolicyAction } from '../../api/policy.ts';
import { addressBytes, anyCidrContains, anyStringMatches, peerFacts, selectorMatches } from './match.ts';

export interface AuthzInput {
  workload: Workload;
  /** Peer SPIFFE id (`spiffe://...`) of an mTLS peer; undefined for plaintext. */
  srcIdentity?: string;
  srcIp: string;
  dstIp: string;
  dstPort: number;
}

export interface PolicyVerdict {
  /** namespace/name */
  policy: string;
  action: PolicyAction;
  matched: boolean;
  /** Index of the matching rule. */
  rule?: number;
}

export interface AuthzDecision {
  allow: boolean;
  /** The deciding policy (namespace/name). */
  policy?: string;
  reason: string;
  verdicts: PolicyVerdict[];
}

/** The connection facts rules look at, computed once per evaluation. */
interface Facts {
  principal?: string;
  namespace?: string;
  srcIp?: Uint8Array;
  dstIp?: Uint8Array;
  dstPort: number;
}

export function appliesTo(p: AuthorizationRecord, w: Workload): boolean {
  switch (p.scope) {
    case 'MESH': return selectorMatches(p.selector, w.labels);
    case 'NAMESPACE': return p.namespace === w.namespace;
    case 'WORKLOAD': return p.namespace === w.namespace && selectorMatches(p.selector, w.labels);
    default: return false;
  }
}

function matchHolds(m: AuthzMatch, f: Facts): boolean {
  // Plaintext peers have no principal/namespace: positive lists never match them, negative ones always hold.
  if (m.principals.length > 0 && !anyStringMatches(m.principals, f.principal)) return false;
  if (m.notPrincipals.length > 0 && anyStringMatches(m.notPrincipals, f.principal)) return false;
  if (m.namespaces.length > 0 && !anyStringMatches(m.namespaces, f.namespace)) return false;
  if (m.notNamespaces.length > 0 && anyStringMatches(m.notNamespaces, f.namespace)) return false;
  if (m.sourceIps.length > 0 && !anyCidrContains(m.sourceIps, f.srcIp)) return false;
  if (m.notSourceIps.length > 0 && anyCidrContains(m.notSourceIps, f.srcIp)) return false;
  if (m.destinationIps.length > 0 && !anyCidrContains(m.destinationIps, f.dstIp)) return false;
  if (m.notDestinationIps.length > 0 && anyCidrContains(m.notDestinationIps, f.dstIp)) return false;
  if (m.destinationPorts.length > 0 && !m.destinationPorts.includes(f.dstPort)) return false;
  if (m.notDestinationPorts.length > 0 && m.notDestinationPorts.includes(f.dstPort)) return false;
  return true;
}

/** Index of the first rule that holds (all clauses; a clause holds when any of its matches does). */
function matchingRule(p: AuthorizationRecord, f: Facts): number | undefined {
  for (let i = 0; i < p.rules.length; i++) {
    if (p.rules[i].clauses.every((clause) => clause.some((m) => matchHolds(m, f)))) return i;
  }
  return undefined;
}

function factsOf(input: AuthzInput): Facts {
  const peer = peerFacts(input.srcIdentity);
  return {
    principal: peer.principal,
    namespace: peer.namespace,
    srcIp: addressBytes(input.srcIp),
    dstIp: addressBytes(input.dstIp),
    dstPort: input.dstPort,
  };
}

function list(keys: string[]): string {
  return keys.length <= 3 ? keys.join(', ') : `${keys.slice(0, 3).join(', ')} and ${keys.length - 3} more`;
}

/** Every applicable policy gets a verdict (explain shows them all); DENY decides before ALLOW. */
export function evaluateAuthorization(input: AuthzInput, policies: readonly AuthorizationRecord[]): AuthzDecision {
  const f = factsOf(input);
  const verdicts: PolicyVerdict[] = [];
  let deny: PolicyVerdict | undefined;
  let allow: PolicyVerdict | undefined;
  const allowPolicies: string[] = [];
  for (const p of policies) {
    if (!appliesTo(p, input.workload)) continue;
    const rule = matchingRule(p, f);
    const v: PolicyVerdict = { policy: policyKey(p), action: p.action, matched: rule !== undefined };
    if (rule !== undefined) v.rule = rule;
    verdicts.push(v);
    if (p.action === 'DENY') {
      if (v.matched) deny ??= v;
    } else {
      allowPolicies.push(v.policy);
      if (v.matched) allow ??= v;
    }
  }
  if (deny) {
    return { allow: false, policy: deny.policy, reason: `denied by DENY policy ${deny.policy} (rule ${deny.rule})`, verdicts };
  }
  if (allowPolicies.length === 0) return { allow: true, reason: 'no ALLOW or matching DENY policy applies', verdicts };
  if (allow) {
    return { allow: true, policy: allow.policy, reason: `allowed by ALLOW policy ${allow.policy} (rule ${allow.rule})`, verdicts };
  }
  return {
    allow: false,
    policy: allowPolicies[0],
    reason: `no ALLOW policy matched (${allowPolicies.length === 1 ? 'policy' : 'policies'} ${list(allowPolicies)} ${allowPolicies.length === 1 ? 'applies' : 'apply'})`,
    verdicts,
  };
}
