/**
 * PeerAuthentication: the effective mTLS mode for one workload and target port, as Istio resolves
 * it. The workload-selector policy (port-level mode, else its mode) decides; UNSET inherits the
 * namespace-wide policy, then the mesh-wide one; default PERMISSIVE. A selector applies only in its
 * own namespace (a root-namespace policy with a selector is not mesh-wide, as in Istio).
 * Where several policies compete at one level the oldest wins (createdAt), ties by name.
 */
import type { Workload } from '../../api/mesh.ts';
import { policyKey, type MtlsMode, type PeerAuthenticationRecord } from '../../api/policy.ts';
import { selectorMatches } from './match.ts';

export interface EffectiveMtls {
  mode: 'PERMISSIVE' | 'STRICT';
  /** The policy whose setting decided (namespace/name); none when the default applies. */
  policy?: string;
}

export function effectiveMtls(workload: Workload, port: number, policies: readonly PeerAuthenticationRecord[]): EffectiveMtls {
  let forWorkload: PeerAuthenticationRecord | undefined;
  let forNamespace: PeerAuthenticationRecord | undefined;
  let forMesh: PeerAuthenticationRecord | undefined;
  for (const p of policies) {
    const withSelector = p.scope === 'WORKLOAD' || (p.scope === 'MESH' && p.selector !== undefined && Object.keys(p.selector).length > 0);
    if (withSelector) {
      if (p.namespace === workload.namespace && selectorMatches(p.selector, workload.labels)) forWorkload = older(forWorkload, p);
    } else if (p.scope === 'MESH') {
      forMesh = older(forMesh, p);
    } else if (p.namespace === workload.namespace) {
      forNamespace = older(forNamespace, p);
    }
  }
  const decided = (mode: MtlsMode, p: PeerAuthenticationRecord): EffectiveMtls | undefined =>
    mode === 'STRICT' || mode === 'PERMISSIVE' ? { mode, policy: policyKey(p) } : undefined;
  if (forWorkload) {
    const portMode = forWorkload.portLevel[port];
    const r = (portMode && decided(portMode, forWorkload)) ?? decided(forWorkload.mode, forWorkload);
    if (r) return r;
  }
  if (forNamespace) {
    const r = decided(forNamespace.mode, forNamespace);
    if (r) return r;
  }
  if (forMesh) {
    const r = decided(forMesh.mode, forMesh);
    if (r) return r;
  }
  return { mode: 'PERMISSIVE' };
}

/** The older of two policies (creationTimestamp; one without is taken as newer), ties by name. */
function older(a: PeerAuthenticationRecord | undefined, b: PeerAuthenticationRecord): PeerAuthenticationRecord {
  if (!a) return b;
  if (a.createdAt !== b.createdAt) {
    if (a.createdAt === undefined) return b;
    if (b.createdAt === undefined) return a;
    const ta = Date.parse(a.createdAt);
    const tb = Date.parse(b.createdAt);
    if (ta !== tb && !Number.isNaN(ta) && !Number.isNaN(tb)) return ta < tb ? a : b;
  }
  return policyKey(b) < policyKey(a) ? b : a;
}
