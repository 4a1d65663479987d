/**
 * The last step of every inbound connection, HBONE or plaintext: apply the authorization decision,
 * then connect to the app from inside the pod netns with the client's IP as source (IP_TRANSPARENT).
 */
import type * as net from 'node:net';
import type { ConnectionRecord } from './connections.ts';
import type { AuthzResult, ProxyContext } from './context.ts';

/**
 * The app socket, or undefined when the connection is refused: `refuse` tells the client how
 * (401 denied / 503 app unreachable on HBONE, a reset on plaintext) and the record is closed.
 */
export async function connectToApp(
  ctx: ProxyContext,
  rec: ConnectionRecord,
  decision: AuthzResult,
  srcIp: string,
  dst: { address: string; port: number },
  refuse: (status: 401 | 503) => void,
): Promise<net.Socket | undefined> {
  rec.set({ policy: decision.policy });
  if (!decision.allow) {
    refuse(401);
    rec.close(`ZT_DENIED: ${decision.reason ?? 'denied by authorization policy'}${decision.policy ? ` (${decision.policy})` : ''}`);
    return undefined;
  }
  try {
    const app = await ctx.sockets.connect(dst.address, dst.port, { localAddress: srcIp, transparent: true });
    app.setNoDelay(true);
    return app;
  } catch (err) {
    refuse(503);
    rec.close(err);
    return undefined;
  }
}
