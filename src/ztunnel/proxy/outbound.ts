/**
 * 15001 in the pod netns: connections the pod's app opened, redirected by the in-pod rules.
 * Original destination -> decideOutbound -> HBONE stream from the pool, or a plain connection for
 * destinations outside the mesh -> bytes both ways. A rejected route resets the app's connection.
 */
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import { PORTS } from '../../api/constants.ts';
import { workloadIdentity } from '../../api/mesh.ts';
import { errorMessage } from '../../shared/errors.ts';
import { logger } from '../../shared/log.ts';
import { localWorkload, workloadName } from './context.ts';
import type { ProxyContext } from './context.ts';
import { decideOutbound, unmapV4 } from './decide.ts';
import { abort, pipeBoth, RELAY_WRITE_BUFFER } from './pipe.ts';
import { formatAddr, parseAddr } from './types.ts';

const log = logger('outbound');

export function createOutboundServer(ctx: ProxyContext): net.Server {
  const server = net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true, highWaterMark: RELAY_WRITE_BUFFER }, (sock) => {
    handle(ctx, sock).catch((err) => {
      log.error('outbound handler failed', { error: errorMessage(err) });
      abort(sock);
    });
  });
  return server;
}

async function handle(ctx: ProxyContext, sock: net.Socket): Promise<void> {
  sock.on('error', () => {}); // reported through the connection record once piped
  const client = { address: unmapV4(sock.remoteAddress ?? ''), port: sock.remotePort ?? 0 };
  let dst: { address: string; port: number };
  try {
    dst = ctx.sockets.originalDst(sock);
  } catch (err) {
    log.warn('no original destination; closing', { pod: `${ctx.pod.namespace}/${ctx.pod.name}`, client: formatAddr(client.address, client.port), error: errorMessage(err) });
    abort(sock);
    return;
  }
  dst = { address: unmapV4(dst.address), port: dst.port };
  if (dst.port === PORTS.outbound && (ctx.pod.ips.includes(dst.address) || dst.address.startsWith('127.'))) {
    abort(sock); // a direct connection to the listener itself would loop
    return;
  }
  const src = localWorkload(ctx);
  const route = decideOutbound(ctx.state, src, dst);
  const rec = ctx.connections.open({
    direction: 'outbound',
    podUid: ctx.pod.uid,
    src: formatAddr(client.address, client.port),
    dst: route.kind === 'reject' ? formatAddr(dst.address, dst.port) : route.target,
    hboneAddr: route.kind === 'hbone' ? route.hboneAddress : undefined,
    srcIdentity: workloadIdentity(src),
    dstIdentity: route.kind === 'hbone' ? route.dstIdentity : undefined,
    srcWorkload: workloadName(src),
    dstWorkload: route.kind === 'reject' ? undefined : workloadName(route.dstWorkload),
    service: route.service?.hostname,
    protocol: route.kind === 'hbone' ? 'HBONE' : 'TCP',
  });
  if (route.kind === 'reject') {
    rec.close(`${route.code}: ${route.message}`);
    abort(sock);
    return;
  }
  let up: Duplex;
  try {
    if (route.kind === 'hbone') {
      const creds = await ctx.certs.get({ namespace: ctx.pod.namespace, serviceAccount: ctx.pod.serviceAccount });
      up = await ctx.pool.open(route, { pod: ctx.pod, sockets: ctx.sockets, workload: src }, creds, client);
    } else {
      const t = parseAddr(route.target);
      if (!t) throw new Error(`bad target ${route.target}`);
      const s = await ctx.sockets.connect(t.address, t.port);
      s.setNoDelay(true);
      up = s;
    }
  } catch (err) {
    rec.close(err);
    abort(sock);
    return;
  }
  if (sock.destroyed) {
    // The app gave up while we were connecting.
    rec.close('client closed before the upstream connection was ready');
    abort(up);
    return;
  }
  pipeBoth(sock, up, rec);
}
