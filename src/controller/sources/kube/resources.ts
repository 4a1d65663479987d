/**
 * The API resources the controller watches. Core resources must list before the first snapshot (an
 * empty snapshot would withdraw every workload from the agents); the mesh CRDs may be missing (not
 * installed yet, or not allowed by RBAC): they count as empty, are reported, and are retried.
 */
export interface WatchedResource {
  apiVersion: string;
  kind: string;
  /** Collection path across all namespaces (or of the cluster-scoped resource). */
  path: string;
  /** A CRD that may not be installed: its absence does not hold back snapshots. */
  optional: boolean;
  /** Status written by the controller (it is left out of snapshots, so our writes cause none). */
  ownStatus: boolean;
}

function core(kind: string, plural: string): WatchedResource {
  return { apiVersion: 'v1', kind, path: `/api/v1/${plural}`, optional: false, ownStatus: false };
}

function group(apiVersion: string, kind: string, plural: string, optional: boolean, ownStatus: boolean): WatchedResource {
  return { apiVersion, kind, path: `/apis/${apiVersion}/${plural}`, optional, ownStatus };
}

export const WATCHED: readonly WatchedResource[] = [
  core('Namespace', 'namespaces'),
  core('Pod', 'pods'),
  core('Service', 'services'),
  core('ServiceAccount', 'serviceaccounts'),
  group('discovery.k8s.io/v1', 'EndpointSlice', 'endpointslices', false, false),
  group('security.istio.io/v1', 'AuthorizationPolicy', 'authorizationpolicies', true, true),
  group('security.istio.io/v1', 'PeerAuthentication', 'peerauthentications', true, true),
];

/** Path of one object of a watched resource (namespaced resources only). */
export function objectPath(r: WatchedResource, namespace: string, name: string): string {
  const i = r.path.lastIndexOf('/');
  return `${r.path.slice(0, i)}/namespaces/${encodeURIComponent(namespace)}/${r.path.slice(i + 1)}/${encodeURIComponent(name)}`;
}

/** Capped exponential backoff with jitter: attempt 0 -> about `base`, doubling up to `max`. */
export function backoffMs(attempt: number, base: number, max: number): number {
  const d = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return Math.round(d * (0.8 + Math.random() * 0.4));
}
