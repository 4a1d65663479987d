/**
 * Which identities run on which node, as the CA needs it: a node agent may get a certificate for
 * namespace/serviceAccount only if a pod with that identity is placed on its node. Pods count from
 * the moment they are scheduled (spec.nodeName), before they have an IP: the agent asks for the
 * certificate while the pod is still being set up.
 */
import type { KubeObject, Pod } from '../../api/k8s.ts';
import { isPlainObject } from './validate.ts';

export interface PodPlacement {
  namespace: string;
  name: string;
  serviceAccount: string;
  node: string;
}

export function podPlacements(objects: KubeObject[]): PodPlacement[] {
  const out: PodPlacement[] = [];
  for (const o of objects) {
    if (o.kind !== 'Pod' || !isPlainObject(o.spec)) continue;
    const pod = o as Pod;
    const phase = pod.status?.phase;
    if (phase === 'Succeeded' || phase === 'Failed') continue;
    const node = pod.spec.nodeName;
    if (typeof node !== 'string' || node === '') continue;
    const sa = pod.spec.serviceAccountName;
    out.push({
      namespace: typeof pod.metadata.namespace === 'string' && pod.metadata.namespace ? pod.metadata.namespace : 'default',
      name: pod.metadata.name,
      serviceAccount: typeof sa === 'string' && sa ? sa : 'default',
      node,
    });
  }
  return out;
}

/**
 * Whether `node` may hold `namespace/serviceAccount`; when not, a reason naming what is missing.
 */
export function checkPlacement(placements: PodPlacement[], node: string, namespace: string, serviceAccount: string): { ok: true } | { ok: false; reason: string } {
  const same = placements.filter((p) => p.namespace === namespace && p.serviceAccount === serviceAccount);
  if (same.some((p) => p.node === node)) return { ok: true };
  if (same.length === 0) {
    const inNs = placements.some((p) => p.namespace === namespace);
    return { ok: false, reason: inNs
      ? `no pod in namespace ${namespace} uses service account ${serviceAccount}`
      : `no pod is scheduled in namespace ${namespace}` };
  }
  const nodes = [...new Set(same.map((p) => p.node))].sort().join(',');
  return { ok: false, reason: `no pod with service account ${namespace}/${serviceAccount} is placed on node ${node} (such pods run on: ${nodes})` };
}
