/**
 * The last step of every inbound connection, HBONE or plaintext: apply the authorization decision,
 * then connect to the app from inside the pod netns with the client's IP as source (IP_TRANSPARENT).
 */
import type * as net from 'node:net';
import type { ConnectionRecord } from './connections.ts';
import type { AuthzContext, AuthzResult, ProxyContext } from './context.ts';
import { errorMessage } from '../../shared/errors.ts';
import { rememberAuthz } from '../authz/recheck.ts';
import { RELAY_WRITE_BUFFER } from './pipe.ts';

/**
 * The app socket, or undefined when the connection is refused: `refuse` tells the client how
 * (401 denied / 503 app unreachable on HBONE, a reset on plaintext) and the record is closed with
 * the deciding policy and reason. Allowed connections keep their facts for re-checks when policies change.
 */
export async function connectToApp(
  ctx: ProxyContext,
  rec: ConnectionRecord,
  authz: AuthzContext,
  dst: { address: string; port: number },
  refuse: (status: 401 | 503) => void,
): Promise<net.Socket | undefined> {
  let decision: AuthzResult;
  try {
    decision = ctx.authorize(authz);
  } catch (err) {
    // Fail closed: a policy we cannot evaluate must not let traffic through.
    decision = { allow: false, reason: `authorization failed: ${errorMessage(err)}` };
  }
  rec.set({ policy: decision.policy });
  if (!decision.allow) {
    refuse(401);
    const reason = decision.reason ?? 'denied by authorization policy';
    rec.close(`ZT_DENIED: ${reason}${decision.policy && !reason.includes(decision.policy) ? ` (${decision.policy})` : ''}`);
    return undefined;
  }
  rememberAuthz(rec, authz);
  let app: net.Socket;
  try {
    app = await ctx.sockets.connect(dst.address, dst.port, { localAddress: authz.srcIp, transparent: true, paused: true, writeBuffer: RELAY_WRITE_BUFFER });
  } catch (err) {
    refuse(503);
    rec.close(err);
    return undefined;
  }
  if (rec.closed) {
    // A policy change denied it while we were connecting (the record says why).
    app.destroy();
    refuse(401);
    return undefined;
  }
  app.setNoDelay(true);
  return app;
}
