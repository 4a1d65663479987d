/**
 * What both local runtimes (object store and Kubernetes API) do for each node before running pods:
 * its directory with the IPAM state and the CNI chain config, and its kube-proxy chains.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CniConflist } from './cni-exec.ts';
import type { NodeInfo, Paths } from './instance.ts';
import { KubeProxy } from './kube-proxy.ts';

export async function prepareNode(paths: Paths, node: NodeInfo, conflist: CniConflist): Promise<KubeProxy> {
  const dir = paths.nodeDir(node.name);
  mkdirSync(join(dir, 'ipam'), { recursive: true });
  writeFileSync(join(dir, '10-ambit.conflist'), JSON.stringify(conflist, null, 2) + '\n');
  const kp = new KubeProxy(node.netns);
  await kp.init();
  return kp;
}
