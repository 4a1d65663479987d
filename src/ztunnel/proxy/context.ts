/**
 * What the three listeners of one pod share: the pod, its socket factory, the state, certificates,
 * the pool, the connection tracker and the authorization hook.
 */
import type { Workload } from '../../api/mesh.ts';
import type { StateView } from '../state/store.ts';
import type { ConnectionTracker } from './connections.ts';
import type { CertificateManager } from '../identity/certificate-manager.ts';
import type { HbonePool } from './pool.ts';
import type { LocalPod, PodSockets } from './types.ts';

/** The part of CertificateManager the data path uses. */
export type CertSource = Pick<CertificateManager, 'get' | 'onRotate'>;

/** Facts an inbound authorization decision can use (L4, as Istio's ztunnel). */
export interface AuthzContext {
  pod: LocalPod;
  /** This pod's workload record, when the controller sent it. */
  workload?: Workload;
  /** Authenticated SPIFFE id of the peer; undefined for plaintext (15006) connections. */
  srcIdentity?: string;
  srcIp: string;
  srcWorkload?: Workload;
  dstIp: string;
  dstPort: number;
  /** 'hbone' (15008, mTLS) or 'plaintext' (15006). */
  transport: 'hbone' | 'plaintext';
}

export interface AuthzResult {
  allow: boolean;
  /** Policy that decided (namespace/name), for logs and the connection record. */
  policy?: string;
  reason?: string;
}

export type Authorizer = (ctx: AuthzContext) => AuthzResult;

export const allowAll: Authorizer = () => ({ allow: true });

export interface ProxyContext {
  pod: LocalPod;
  sockets: PodSockets;
  state: StateView;
  certs: CertSource;
  pool: HbonePool;
  connections: ConnectionTracker;
  trustDomain: string;
  authorize: Authorizer;
}

/** The pod's workload record, or one built from what the CNI hand-off told us (controller not synced yet). */
export function localWorkload(ctx: Pick<ProxyContext, 'pod' | 'state' | 'trustDomain'>): Workload {
  const w = ctx.state.workloadByUid(ctx.pod.uid);
  if (w) return w;
  const p = ctx.pod;
  return {
    uid: p.uid,
    name: p.name,
    namespace: p.namespace,
    addresses: p.ips,
    node: '',
    serviceAccount: p.serviceAccount,
    trustDomain: ctx.trustDomain,
    protocol: 'HBONE',
    ready: true,
    labels: {},
    canonicalName: p.name,
    canonicalRevision: 'latest',
    services: {},
  };
}

export function workloadName(w: Workload | undefined): string | undefined {
  return w ? `${w.namespace}/${w.name}` : undefined;
}

/** Addresses of this pod: what the CNI hand-off said, plus what the controller knows. */
export function isLocalAddress(ctx: Pick<ProxyContext, 'pod' | 'state'>, ip: string): boolean {
  return ctx.pod.ips.includes(ip) || (ctx.state.workloadByUid(ctx.pod.uid)?.addresses.includes(ip) ?? false);
}
