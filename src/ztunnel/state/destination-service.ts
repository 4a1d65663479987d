/**
 * Which service a connection is for, from what the agent knows: the hostname the client addressed
 * (outbound), else the destination workload's service with that target port (inbound, where HBONE
 * carries only the pod address). Shared by the metrics labels and the access log.
 */
import type { MeshService, Workload } from '../../api/mesh.ts';
import type { StateView } from './store.ts';

/** hostname -> service, rebuilt when the state changes (one lookup per connection, not a scan). */
const hostIndex = new WeakMap<StateView, { version: string; list: MeshService[]; map: Map<string, MeshService> }>();
function hostnames(state: StateView): Map<string, MeshService> {
  const list = state.services();
  let idx = hostIndex.get(state);
  if (!idx || idx.version !== state.version || idx.list !== list) {
    idx = { version: state.version, list, map: new Map(list.map((s) => [s.hostname, s])) };
    hostIndex.set(state, idx);
  }
  return idx.map;
}

/**
 * The destination service: the one the client addressed (outbound, by hostname), else the service
 * of the destination workload whose target port is the connection's port (what the inbound side can
 * know, since HBONE carries the pod address): both reporters then agree. First by key when several.
 */
export function destinationService(state: StateView, hostname: string | undefined, dst: Workload | undefined, dstPort: number | undefined): MeshService | undefined {
  if (hostname) {
    const byHost = hostnames(state).get(hostname);
    if (byHost) return byHost;
  }
  if (!dst || dstPort === undefined) return undefined;
  const keys = Object.keys(dst.services).sort();
  for (const key of keys) {
    if (Object.values(dst.services[key]).some((target) => Number(target) === dstPort)) return state.service(key);
  }
  return undefined;
}
