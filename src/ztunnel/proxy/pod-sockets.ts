/**
 * Production PodSockets: sockets created inside a pod's network namespace by the native addon,
 * each carrying the agent mark 0x539 so the in-pod redirection rules let them through.
 */
import { SOCKET_MARK } from '../../api/constants.ts';
import * as native from '../../native/index.ts';
import type { NetnsRef } from '../../native/index.ts';
import type { PodSockets } from './types.ts';

export type { PodSockets } from './types.ts';

export interface NetnsPodSocketsOptions {
  /** Address the listeners bind (default 0.0.0.0: REDIRECT rewrites to an interface address or 127.0.0.1). */
  listenHost?: string;
  connectTimeoutMs?: number;
}

export function netnsPodSockets(netns: NetnsRef, o: NetnsPodSocketsOptions = {}): PodSockets {
  const host = o.listenHost ?? '0.0.0.0';
  return {
    listen: (server, port, lo) =>
      native.listen(server, {
        netns,
        host,
        port,
        mark: SOCKET_MARK,
        transparent: lo?.transparent,
        // An upgraded agent can open its listeners before the old one lets go (Istio does the same).
        reusePort: true,
      }),
    connect: (connectHost, port, co) =>
      native.connect({
        netns,
        host: connectHost,
        port,
        mark: SOCKET_MARK,
        localAddress: co?.localAddress,
        // Spoofing the client's address needs IP_TRANSPARENT; freebind lets us bind an address not on this host.
        transparent: co?.transparent,
        freebind: co?.transparent,
        timeoutMs: co?.timeoutMs ?? o.connectTimeoutMs ?? 10_000,
        paused: co?.paused,
        writableHighWaterMark: co?.writeBuffer,
      }),
    originalDst: (s) => {
      const d = native.originalDst(s);
      return { address: d.address, port: d.port };
    },
  };
}
