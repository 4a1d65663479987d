/**
 * Outbound routing decision: a pure function of the state snapshot, the source workload and the
 * original destination. No sockets here, so every branch is unit-tested (test/unit/decide.test.ts).
 */
import { PORTS } from '../../api/constants.ts';
import { workloadIdentity } from '../../api/mesh.ts';
import type { Endpoint, MeshService, Workload } from '../../api/mesh.ts';
import type { StateView } from '../state/store.ts';
import { formatAddr } from './types.ts';
import type { Addr, Route } from './types.ts';

/** The part of the state a decision reads (a StateView satisfies it). */
export type DecideState = Pick<StateView, 'workloadByAddress' | 'workloadByUid' | 'serviceByAddress' | 'services'>;

/** `random` returns [0,1); injectable so tests can pin the choice. */
export function decideOutbound(
  state: DecideState,
  src: Workload | undefined,
  dst: Addr,
  random: () => number = Math.random,
): Route {
  void src; // waypoints and locality (later issues) depend on the source
  const address = unmapV4(dst.address);

  // A pod IP first: the common case for direct pod-to-pod traffic, and cheaper than the VIP scan.
  const direct = state.workloadByAddress(address);
  if (direct) return toWorkload(direct, address, dst.port, undefined);

  const hit = state.serviceByAddress(address, dst.port);
  if (hit?.port) return toService(state, hit.service, dst.port, random);
  const svc = hit?.service ?? state.services().find((s) => s.vips.includes(address));
  if (svc) {
    return {
      kind: 'reject',
      code: 'ZT_NO_ROUTE',
      service: svc,
      message: `service ${svc.namespace}/${svc.name} (${address}) has no port ${dst.port}; check the Service's ports`,
    };
  }
  // Unknown address: outside the mesh, leave it alone.
  return { kind: 'passthrough', target: formatAddr(address, dst.port) };
}

function toService(state: DecideState, svc: MeshService, svcPort: number, random: () => number): Route {
  const withPort = svc.endpoints.filter((e) => targetPort(e, svcPort) !== undefined);
  const ready = withPort.filter((e) => e.ready);
  if (ready.length === 0) {
    return {
      kind: 'reject',
      code: 'ZT_NO_HEALTHY_UPSTREAM',
      service: svc,
      message:
        `service ${svc.namespace}/${svc.name} port ${svcPort} has no ready endpoint ` +
        `(${withPort.length} endpoint(s) with that port, none ready); check the pods behind it`,
    };
  }
  const ep = ready[Math.min(ready.length - 1, Math.floor(random() * ready.length))];
  const port = targetPort(ep, svcPort) as number;
  const w = state.workloadByUid(ep.workloadUid);
  if (!w) return { kind: 'passthrough', target: formatAddr(ep.address, port), service: svc };
  return toWorkload(w, ep.address, port, svc);
}

function toWorkload(w: Workload, address: string, port: number, service: MeshService | undefined): Route {
  const target = formatAddr(address, port);
  if (w.protocol !== 'HBONE') return { kind: 'passthrough', target, dstWorkload: w, service };
  return {
    kind: 'hbone',
    hboneAddress: formatAddr(address, PORTS.hbone),
    target,
    dstIdentity: workloadIdentity(w),
    dstWorkload: w,
    service,
  };
}

function targetPort(e: Endpoint, svcPort: number): number | undefined {
  const p = e.ports[svcPort];
  return typeof p === 'number' && p > 0 ? p : undefined;
}

/** `::ffff:10.0.0.1` -> `10.0.0.1` (a dual-stack socket reports IPv4 peers that way). */
export function unmapV4(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}
