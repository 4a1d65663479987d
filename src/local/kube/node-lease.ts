/**
 * A node's Lease in kube-node-lease, renewed with every heartbeat as a kubelet does: the node
 * lifecycle controller takes a renewed lease as the node being alive. Owned by the Node, so it goes
 * when the Node does. Created by server-side apply, renewed by a merge patch of renewTime (a later
 * apply without the ownerReferences would drop them).
 */
import { MERGE_PATCH, statusOf, type KubeClient } from '../../controller/sources/kube/client.ts';
import { microTime } from '../../controller/sources/kube/lease.ts';

/** A kubelet's default node lease duration. */
export const NODE_LEASE_SECONDS = 40;

/** `nodeUid` given: (re)create the lease; otherwise renew it, recreating it if it was deleted. */
export async function renewNodeLease(client: KubeClient, node: string, fieldManager: string, nodeUid?: string): Promise<void> {
  const path = `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${node}`;
  const renewTime = microTime(new Date());
  if (!nodeUid) {
    try {
      await client.request('PATCH', path, { spec: { renewTime } }, { contentType: MERGE_PATCH });
      return;
    } catch (err) {
      if (statusOf(err) !== 404) throw err;
      nodeUid = (await client.request<{ metadata: { uid: string } }>('GET', `/api/v1/nodes/${node}`)).metadata.uid;
    }
  }
  const lease = {
    apiVersion: 'coordination.k8s.io/v1', kind: 'Lease',
    metadata: { name: node, namespace: 'kube-node-lease', ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: node, uid: nodeUid }] },
    spec: { holderIdentity: node, leaseDurationSeconds: NODE_LEASE_SECONDS, renewTime },
  };
  await client.request('PATCH', `${path}?fieldManager=${fieldManager}&force=true`, lease, { contentType: 'application/apply-patch+yaml' });
}
