/**
 * L4 security policy as the controller pushes it to node agents: AuthorizationPolicy and
 * PeerAuthentication (security.istio.io/v1) after validation, reduced to what an agent enforces.
 * Pure data, JSON-serialisable. The Kubernetes objects are translated in src/controller/translate.
 */

export type PolicyAction = 'ALLOW' | 'DENY';

/**
 * Where a policy applies. MESH: in the root namespace (istio-system by default); applies to every
 * workload of the mesh, or to those its selector matches in any namespace. NAMESPACE: no selector,
 * every workload of its namespace. WORKLOAD: its selector, within its namespace.
 */
export type PolicyScope = 'MESH' | 'NAMESPACE' | 'WORKLOAD';

/**
 * One alternative of a clause. Every non-empty field must hold; an empty field does not constrain.
 * String values match exactly, or with one leading or trailing `*` (prefix / suffix), or `*` alone
 * (any value present). Principals have no `spiffe://` (`cluster.local/ns/NS/sa/SA`). IP fields are
 * CIDRs (a bare address is normalised to /32 or /128 by the controller).
 */
export interface AuthzMatch {
  principals: string[];
  notPrincipals: string[];
  namespaces: string[];
  notNamespaces: string[];
  sourceIps: string[];
  notSourceIps: string[];
  destinationIps: string[];
  notDestinationIps: string[];
  destinationPorts: number[];
  notDestinationPorts: number[];
}

/** A clause holds when any of its matches holds. */
export type AuthzClause = AuthzMatch[];

/** A rule holds when all its clauses hold; a rule with no clauses holds for every connection. */
export interface AuthzRule {
  clauses: AuthzClause[];
}

export interface AuthorizationRecord {
  name: string;
  namespace: string;
  scope: PolicyScope;
  /** matchLabels of spec.selector (MESH with a selector, WORKLOAD). */
  selector?: Record<string, string>;
  action: PolicyAction;
  /**
   * A policy matches a connection when any rule holds. ALLOW with no rules allows nothing; an
   * ALLOW rule that needed L7 attributes was dropped (fails closed); a DENY rule keeps its L4 part.
   */
  rules: AuthzRule[];
  /** What the controller could not enforce at L4 and how it handled it (shown by CLI / status). */
  warnings: string[];
}

export type MtlsMode = 'UNSET' | 'PERMISSIVE' | 'STRICT';

export interface PeerAuthenticationRecord {
  name: string;
  namespace: string;
  scope: PolicyScope;
  selector?: Record<string, string>;
  /** UNSET inherits from the namespace-wide, then the mesh-wide policy (default PERMISSIVE). */
  mode: MtlsMode;
  /** Workload target port -> mode (only with a selector, as Istio). */
  portLevel: Record<number, MtlsMode>;
  /** metadata.creationTimestamp: when several selector policies match a workload, the oldest wins (ties by name). */
  createdAt?: string;
}

export function policyKey(p: { namespace: string; name: string }): string {
  return `${p.namespace}/${p.name}`;
}

export function emptyMatch(): AuthzMatch {
  return {
    principals: [], notPrincipals: [], namespaces: [], notNamespaces: [],
    sourceIps: [], notSourceIps: [], destinationIps: [], notDestinationIps: [],
    destinationPorts: [], notDestinationPorts: [],
  };
}

/** Default root namespace for mesh-wide policy, as Istio. */
export const DEFAULT_ROOT_NAMESPACE = 'istio-system';
