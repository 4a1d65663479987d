/**
 * Where the CNI plugin learns a pod's labels, uid and service account, and its namespace's labels.
 * The local mesh keeps them in an ObjectStore directory; on a cluster they come from the API server
 * (kube-metadata.ts).
 */
import { ObjectStore } from '../api/object-store.ts';
import type { Namespace, Pod } from '../api/k8s.ts';
import { DATAPLANE_AMBIENT, DATAPLANE_NONE, LABELS } from '../api/constants.ts';

export interface PodMetadataSource {
  pod(namespace: string, name: string): Promise<Pod | undefined>;
  namespace(name: string): Promise<Namespace | undefined>;
}

export class ObjectStoreMetadataSource implements PodMetadataSource {
  #store: ObjectStore;
  constructor(root: string) {
    this.#store = new ObjectStore(root);
  }
  async pod(namespace: string, name: string): Promise<Pod | undefined> {
    return this.#store.getSync<Pod>('Pod', namespace, name);
  }
  async namespace(name: string): Promise<Namespace | undefined> {
    return this.#store.getSync<Namespace>('Namespace', undefined, name);
  }
}

export type Enrollment =
  | { enrolled: true; pod: Pod }
  | { enrolled: false; reason: string; pod?: Pod };

/** Ambient when the namespace (or the pod) says so, unless the pod opts out with `none`. */
export function enrollment(pod: Pod | undefined, ns: Namespace | undefined): Enrollment {
  if (!pod) return { enrolled: false, reason: 'pod unknown to the metadata source' };
  const podMode = pod.metadata.labels?.[LABELS.dataplaneMode];
  if (podMode === DATAPLANE_NONE) return { enrolled: false, reason: `pod label ${LABELS.dataplaneMode}=${DATAPLANE_NONE}`, pod };
  if (podMode === DATAPLANE_AMBIENT) return { enrolled: true, pod };
  if (!ns) return { enrolled: false, reason: 'namespace unknown to the metadata source', pod };
  if (ns.metadata.labels?.[LABELS.dataplaneMode] === DATAPLANE_AMBIENT) return { enrolled: true, pod };
  return { enrolled: false, reason: `namespace not labelled ${LABELS.dataplaneMode}=${DATAPLANE_AMBIENT}`, pod };
}
