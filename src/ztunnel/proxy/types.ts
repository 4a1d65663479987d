/**
 * Shared shapes of the data path: the local pod an agent proxies for, how sockets are made inside
 * its netns, and the Route value that decide.ts returns (moving bytes stays apart from deciding).
 */
import type * as net from 'node:net';
import type { MeshService, Workload } from '../../api/mesh.ts';

/** A pod on this node handed over by the CNI plugin. `netnsFd` stays open while the pod lives. */
export interface LocalPod {
  uid: string;
  name: string;
  namespace: string;
  serviceAccount: string;
  ips: string[];
  netnsFd: number;
}

/** Sockets inside one pod's network namespace; every socket carries the agent's mark. */
export interface PodSockets {
  listen(server: net.Server, port: number, o?: { transparent?: boolean }): Promise<void>;
  connect(
    host: string,
    port: number,
    /**
     * paused: the socket does not read until resumed or piped (a relay may switch it to pool buffers
     * first); writeBuffer: bytes it buffers before asking its writer to wait.
     */
    o?: { localAddress?: string; transparent?: boolean; timeoutMs?: number; paused?: boolean; writeBuffer?: number },
  ): Promise<net.Socket>;
  originalDst(s: net.Socket): { address: string; port: number };
}

export interface HboneRoute {
  kind: 'hbone';
  /** `<dst pod ip>:15008` (or a waypoint later). */
  hboneAddress: string;
  /** `<ip>:<port>`, the CONNECT :authority. */
  target: string;
  /** SPIFFE id the destination must present. */
  dstIdentity: string;
  dstWorkload: Workload;
  service?: MeshService;
}

export interface PassthroughRoute {
  kind: 'passthrough';
  /** `<ip>:<port>` to connect to directly from the pod's netns. */
  target: string;
  dstWorkload?: Workload;
  service?: MeshService;
}

export interface RejectRoute {
  kind: 'reject';
  code: 'ZT_NO_ROUTE' | 'ZT_NO_HEALTHY_UPSTREAM';
  message: string;
  service?: MeshService;
}

export type Route = HboneRoute | PassthroughRoute | RejectRoute;

export interface Addr {
  address: string;
  port: number;
}

/** `ip:port`, with brackets for IPv6. */
export function formatAddr(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/** Inverse of formatAddr; undefined when `s` is not `ip:port` / `[ip6]:port`. */
export function parseAddr(s: string): Addr | undefined {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(s) ?? /^([0-9.]+):(\d{1,5})$/.exec(s);
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return undefined;
  return { address: m[1], port };
}
