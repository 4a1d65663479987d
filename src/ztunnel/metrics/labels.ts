/**
 * Istio's L4 metric labels for one connection, computed from the connection record and the agent's
 * state, so Istio dashboards (Kiali, Grafana) read Ambit's metrics unchanged. Pure: no sockets.
 *
 * Cardinality: only workload-level names go into labels (the owning Deployment's name, never a
 * pod name, IP or port), so the number of label sets grows with workloads x services, not with pods
 * or connections. series-cap.ts bounds it anyway.
 */
import type { Workload } from '../../api/mesh.ts';
import { workloadIdentity } from '../../api/mesh.ts';
import type { StateView } from '../state/store.ts';
import { destinationService } from '../state/destination-service.ts';
import type { ClosedConnection, ConnectionInfo } from '../proxy/connections.ts';
import { parseAddr } from '../proxy/types.ts';

export const UNKNOWN = 'unknown';
/** Istio's default cluster id. */
export const DEFAULT_CLUSTER = 'Kubernetes';

export const TCP_LABEL_NAMES = [
  'reporter',
  'source_workload', 'source_workload_namespace', 'source_principal', 'source_app', 'source_version',
  'source_canonical_service', 'source_canonical_revision', 'source_cluster',
  'destination_workload', 'destination_workload_namespace', 'destination_principal', 'destination_app', 'destination_version',
  'destination_canonical_service', 'destination_canonical_revision', 'destination_cluster',
  'destination_service', 'destination_service_namespace', 'destination_service_name',
  'request_protocol', 'connection_security_policy',
] as const;

export type TcpLabelName = (typeof TCP_LABEL_NAMES)[number];
export type TcpLabels = Record<TcpLabelName, string>;
/** What the closed/failed counters add: how the connection ended. */
export type ResponseFlags = '-' | 'DENY' | 'CONNECT';

export interface LabelOptions {
  /** Cluster id for source_cluster / destination_cluster (Istio's default: Kubernetes). */
  cluster?: string;
}

/** The workload's side of the labels; `unknown` everywhere Istio would say so. */
function side(w: Workload | undefined, principal: string | undefined, fallbackNamespace: string | undefined, cluster: string) {
  const labels = w?.labels ?? {};
  return {
    workload: w ? (w.workloadName || w.canonicalName || UNKNOWN) : UNKNOWN,
    namespace: w?.namespace ?? fallbackNamespace ?? namespaceOf(principal) ?? UNKNOWN,
    principal: principal ?? UNKNOWN,
    app: labels['app.kubernetes.io/name'] ?? labels.app ?? UNKNOWN,
    version: labels['app.kubernetes.io/version'] ?? labels.version ?? UNKNOWN,
    canonicalService: w?.canonicalName || UNKNOWN,
    canonicalRevision: w?.canonicalRevision || UNKNOWN,
    cluster: w || principal ? cluster : UNKNOWN,
  };
}

/** `spiffe://td/ns/NS/sa/SA` -> NS */
function namespaceOf(principal: string | undefined): string | undefined {
  return principal?.match(/^spiffe:\/\/[^/]+\/ns\/([^/]+)\/sa\//)?.[1];
}

function namespaceOfName(nsName: string | undefined): string | undefined {
  const i = nsName?.indexOf('/') ?? -1;
  return i > 0 ? nsName!.slice(0, i) : undefined;
}

function ipOf(addr: string): string | undefined {
  return parseAddr(addr)?.address;
}

/**
 * Labels of a connection as its reporter sees it: `source` for outbound (this agent serves the
 * client), `destination` for inbound. Computed once at open; bytes and the close are counted
 * under the same set.
 */
export function tcpLabels(c: ConnectionInfo, state: StateView, o: LabelOptions = {}): TcpLabels {
  const cluster = o.cluster ?? DEFAULT_CLUSTER;
  const outbound = c.direction === 'outbound';
  const local = state.workloadByUid(c.podUid);
  const srcIp = ipOf(c.src);
  const dstAddr = parseAddr(c.dst);
  const srcW = outbound ? local : srcIp !== undefined ? state.workloadByAddress(srcIp) : undefined;
  const dstW = outbound ? (dstAddr ? state.workloadByAddress(dstAddr.address) : undefined) : local;
  // Principals only as authenticated: a plaintext client has none, whatever its IP says.
  const srcPrincipal = c.srcIdentity ?? (outbound && local ? workloadIdentity(local) : undefined);
  const dstPrincipal = c.protocol === 'HBONE' || !outbound ? c.dstIdentity : undefined;
  const src = side(srcW, srcPrincipal, namespaceOfName(c.srcWorkload), cluster);
  const dst = side(dstW, dstPrincipal, namespaceOfName(c.dstWorkload), cluster);
  const svc = destinationService(state, c.service, dstW, dstAddr?.port);
  return {
    reporter: outbound ? 'source' : 'destination',
    source_workload: src.workload,
    source_workload_namespace: src.namespace,
    source_principal: src.principal,
    source_app: src.app,
    source_version: src.version,
    source_canonical_service: src.canonicalService,
    source_canonical_revision: src.canonicalRevision,
    source_cluster: src.cluster,
    destination_workload: dst.workload,
    destination_workload_namespace: dst.namespace,
    destination_principal: dst.principal,
    destination_app: dst.app,
    destination_version: dst.version,
    destination_canonical_service: dst.canonicalService,
    destination_canonical_revision: dst.canonicalRevision,
    destination_cluster: dst.cluster,
    destination_service: svc?.hostname ?? c.service ?? UNKNOWN,
    destination_service_namespace: svc?.namespace ?? UNKNOWN,
    destination_service_name: svc?.name ?? UNKNOWN,
    request_protocol: 'tcp',
    connection_security_policy: c.protocol === 'HBONE' ? 'mutual_tls' : UNKNOWN,
  };
}

/**
 * A denial by policy: refused at the destination (ZT_DENIED), closed by a policy change
 * (ZT_POLICY_CHANGED), or, seen from the source, the destination's 401 answer (ZT_HBONE_401).
 */
function isDenied(c: ClosedConnection): boolean {
  if ((c as { deniedBy?: unknown }).deniedBy) return true;
  return /^ZT_(DENIED|POLICY_CHANGED|HBONE_401|[A-Z_]*DENY|[A-Z_]*STRICT)\b/.test(c.error ?? '');
}

/**
 * Istio's response_flags for a closed connection: DENY (refused by policy), CONNECT (never joined
 * to its destination: no route, upstream unreachable, bad request), `-` otherwise (including a
 * connection reset after bytes flowed: it did connect).
 */
export function responseFlags(c: ClosedConnection): ResponseFlags {
  if (!c.error) return '-';
  if (isDenied(c)) return 'DENY';
  return c.established ? '-' : 'CONNECT';
}
