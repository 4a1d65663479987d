/**
 * 15006 in the pod netns: plaintext connections from clients outside the mesh (PERMISSIVE), caught
 * by the in-pod PREROUTING rule. The original destination must be one of this pod's IPs; the app
 * is reached from inside the netns with the client's IP as source (IP_TRANSPARENT).
 */
import * as net from 'node:net';
import { PORTS } from '../../api/constants.ts';
import { spiffeId } from '../../api/mesh.ts';
import { errorMessage } from '../../shared/errors.ts';
import { logger } from '../../shared/log.ts';
import { isLocalAddress, localWorkload, workloadName } from './context.ts';
import type { ProxyContext } from './context.ts';
import { unmapV4 } from './decide.ts';
import { abort, pipeBoth } from './pipe.ts';
import { connectToApp } from './app-connect.ts';
import { destinationService } from '../state/destination-service.ts';
import { formatAddr } from './types.ts';

const log = logger('inbound-plain');

export function createPlaintextInboundServer(ctx: ProxyContext): net.Server {
  return net.createServer({ allowHalfOpen: true, noDelay: true }, (sock) => {
    handle(ctx, sock).catch((err) => {
      log.error('plaintext inbound handler failed', { error: errorMessage(err) });
      abort(sock);
    });
  });
}

async function handle(ctx: ProxyContext, sock: net.Socket): Promise<void> {
  sock.on('error', () => {});
  const srcIp = unmapV4(sock.remoteAddress ?? '');
  const srcPort = sock.remotePort ?? 0;
  let dst: { address: string; port: number };
  try {
    dst = ctx.sockets.originalDst(sock);
  } catch (err) {
    log.warn('no original destination; closing', { pod: `${ctx.pod.namespace}/${ctx.pod.name}`, client: formatAddr(srcIp, srcPort), error: errorMessage(err) });
    abort(sock);
    return;
  }
  const dstIp = unmapV4(dst.address);
  // Not for this pod, or aimed at the agent's own ports (would loop back into us).
  if (!isLocalAddress(ctx, dstIp) || dst.port === PORTS.inboundPlaintext || dst.port === PORTS.outbound) {
    log.debug('plaintext inbound not for this pod; closing', { pod: `${ctx.pod.namespace}/${ctx.pod.name}`, dst: formatAddr(dstIp, dst.port) });
    abort(sock);
    return;
  }
  const me = localWorkload(ctx);
  const srcWorkload = ctx.state.workloadByAddress(srcIp);
  const rec = ctx.connections.open({
    direction: 'inbound',
    podUid: ctx.pod.uid,
    src: formatAddr(srcIp, srcPort),
    dst: formatAddr(dstIp, dst.port),
    dstIdentity: spiffeId(ctx.trustDomain, ctx.pod.namespace, ctx.pod.serviceAccount),
    srcWorkload: workloadName(srcWorkload),
    dstWorkload: workloadName(me),
    service: destinationService(ctx.state, undefined, me, dst.port)?.hostname,
    protocol: 'TCP',
  });
  const authz = { pod: ctx.pod, workload: me, srcIp, srcWorkload, dstIp, dstPort: dst.port, transport: 'plaintext' as const };
  // A denial (policy, or STRICT mTLS for this port) resets the client.
  const app = await connectToApp(ctx, rec, authz, { address: dstIp, port: dst.port }, () => abort(sock));
  if (!app) return;
  if (sock.destroyed) {
    rec.close('client closed before the app connection was ready');
    app.destroy();
    return;
  }
  pipeBoth(sock, app, rec);
}
