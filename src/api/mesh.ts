/**
 * The mesh's own view of the cluster, as the controller pushes it to node agents: workloads and
 * services (the shape of Istio's WDS Address records). Pure data, JSON-serialisable.
 */

/** How traffic reaches a workload: HBONE when it is enrolled in the mesh, plain TCP otherwise. */
export type TunnelProtocol = 'HBONE' | 'TCP';

export interface Workload {
  /** Kubernetes pod uid; the key of the record. */
  uid: string;
  name: string;
  namespace: string;
  /** Pod IPs (IPv4 and/or IPv6), as strings. */
  addresses: string[];
  /** Node the pod runs on. */
  node: string;
  serviceAccount: string;
  trustDomain: string;
  /** HBONE when the pod is enrolled (namespace label ambient and not opted out). */
  protocol: TunnelProtocol;
  /** Pod Ready condition. */
  ready: boolean;
  labels: Record<string, string>;
  canonicalName: string;
  canonicalRevision: string;
  /** The owning workload's name (Deployment, StatefulSet, ...; the pod name for a bare pod), for metrics. */
  workloadName?: string;
  /** Name of a waypoint for this workload, when one applies (later issues). */
  waypoint?: { namespace: string; name: string; address?: string };
  /** Service keys (`namespace/name`) that select this workload, with port mappings service port -> target port. */
  services: Record<string, Record<number, number>>;
}

export interface ServicePort {
  name?: string;
  /** Port on the service VIP. */
  port: number;
  /** Target port on the pods; a named port is resolved per endpoint (see Endpoint.ports). */
  targetPort: number | string;
  protocol: 'TCP' | 'UDP' | 'SCTP';
  appProtocol?: string;
}

export interface Endpoint {
  workloadUid: string;
  address: string;
  /** Service port -> resolved target port on this endpoint. */
  ports: Record<number, number>;
  ready: boolean;
}

export interface MeshService {
  name: string;
  namespace: string;
  /** e.g. echo.demo.svc.cluster.local */
  hostname: string;
  /** Cluster IPs. */
  vips: string[];
  ports: ServicePort[];
  endpoints: Endpoint[];
  waypoint?: { namespace: string; name: string; address?: string };
}

export function serviceKey(s: { namespace: string; name: string }): string {
  return `${s.namespace}/${s.name}`;
}

export function spiffeId(trustDomain: string, namespace: string, serviceAccount: string): string {
  return `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
}

export function workloadIdentity(w: Pick<Workload, 'trustDomain' | 'namespace' | 'serviceAccount'>): string {
  return spiffeId(w.trustDomain, w.namespace, w.serviceAccount);
}
