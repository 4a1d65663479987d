/**
 * PodProxy: the agent's three listeners inside one enrolled pod's netns — 15001 (captured
 * outbound), 15006 (captured plaintext inbound), 15008 (HBONE inbound) — and their graceful stop.
 * The HBONE listener needs the pod's certificate: start() waits for it only briefly, then keeps
 * retrying in the background so a slow controller does not hold up the pod's outbound traffic.
 */
import type * as net from 'node:net';
import type * as tls from 'node:tls';
import { PORTS } from '../../api/constants.ts';
import { spiffeId } from '../../api/mesh.ts';
import { errorMessage } from '../../shared/errors.ts';
import { logger } from '../../shared/log.ts';
import { hboneServerOptions } from '../../shared/tls.ts';
import { allowAll } from './context.ts';
import type { Authorizer, ProxyContext } from './context.ts';
import type { LocalPod } from './types.ts';
import { createHboneServer } from './inbound.ts';
import { createPlaintextInboundServer } from './inbound-plain.ts';
import { createOutboundServer } from './outbound.ts';

export type { LocalPod, PodSockets, Route } from './types.ts';
export { decideOutbound } from './decide.ts';

const log = logger('pod-proxy');

export type PodProxyOptions = Omit<ProxyContext, 'authorize'> & {
  /** Inbound L4 authorization (default: allow everything). */
  authorize?: Authorizer;
  /** How long start() waits for the pod certificate before leaving 15008 to the background (default 1 s). */
  certWaitMs?: number;
};

interface H2ServerSession {
  readonly closed: boolean;
  close(): void;
  destroy(): void;
  once(event: 'close', cb: () => void): unknown;
}

export class PodProxy {
  #ctx: ProxyContext;
  #certWaitMs: number;
  #outbound: net.Server | undefined;
  #plain: net.Server | undefined;
  #hbone: tls.Server | undefined;
  #hboneReady: Promise<void> | undefined;
  /** node's ServerHttp2Session or the lean H2Session: both close() (GOAWAY, drain) and destroy(). */
  #h2Sessions = new Set<H2ServerSession>();
  #unsubscribe: (() => void) | undefined;
  #stopped = false;
  #retry: NodeJS.Timeout | undefined;
  #wake: (() => void) | undefined;

  constructor(o: PodProxyOptions) {
    this.#ctx = {
      pod: o.pod,
      sockets: o.sockets,
      state: o.state,
      certs: o.certs,
      pool: o.pool,
      connections: o.connections,
      trustDomain: o.trustDomain,
      authorize: o.authorize ?? allowAll,
    };
    this.#certWaitMs = o.certWaitMs ?? 1000;
  }

  get pod(): LocalPod { return this.#ctx.pod; }

  /** Replace the inbound authorization hook (policies change at run time). */
  setAuthorizer(a: Authorizer): void { this.#ctx.authorize = a; }

  async start(): Promise<void> {
    const { sockets } = this.#ctx;
    this.#outbound = createOutboundServer(this.#ctx);
    await sockets.listen(this.#outbound, PORTS.outbound);
    this.#plain = createPlaintextInboundServer(this.#ctx);
    await sockets.listen(this.#plain, PORTS.inboundPlaintext);
    this.#hboneReady = this.#startHbone(250);
    this.#hboneReady.catch(() => {});
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.#hboneReady,
      new Promise<void>((resolve) => { timer = setTimeout(resolve, this.#certWaitMs); }),
    ]).finally(() => clearTimeout(timer));
  }

  /** Resolves once 15008 listens (tests, readiness). */
  whenHboneReady(): Promise<void> {
    return this.#hboneReady ?? Promise.reject(new Error('PodProxy not started'));
  }

  async #startHbone(backoffMs: number): Promise<void> {
    const { pod, certs } = this.#ctx;
    const id = { namespace: pod.namespace, serviceAccount: pod.serviceAccount };
    for (;;) {
      if (this.#stopped) throw new Error('stopped');
      try {
        const creds = await certs.get(id);
        if (this.#stopped) throw new Error('stopped');
        const server = createHboneServer(this.#ctx, creds);
        server.on('session', (s: H2ServerSession) => {
          this.#h2Sessions.add(s);
          s.once('close', () => this.#h2Sessions.delete(s));
        });
        const mine = spiffeId(this.#ctx.trustDomain, pod.namespace, pod.serviceAccount);
        this.#unsubscribe = certs.onRotate((c) => {
          if (c.identity === mine) server.setSecureContext(hboneServerOptions(c));
        });
        await this.#ctx.sockets.listen(server, PORTS.hbone);
        this.#hbone = server;
        if (this.#stopped) server.close();
        return;
      } catch (err) {
        if (this.#stopped) throw err;
        this.#unsubscribe?.();
        log.warn('HBONE listener not up yet; retrying', { pod: `${pod.namespace}/${pod.name}`, error: errorMessage(err), retryMs: backoffMs });
        // Wake up early when the certificate manager gets our certificate (controller back).
        const mine = spiffeId(this.#ctx.trustDomain, pod.namespace, pod.serviceAccount);
        await new Promise<void>((resolve) => {
          const off = certs.onRotate((c) => { if (c.identity === mine) wake(); });
          const wake = (): void => { off(); clearTimeout(this.#retry); this.#wake = undefined; resolve(); };
          this.#wake = wake;
          this.#retry = setTimeout(wake, backoffMs);
        });
        backoffMs = Math.min(backoffMs * 2, 30_000);
      }
    }
  }

  /**
   * Stop accepting, let open connections finish for up to `drainMs`, then cut what is left.
   * Nothing of ours stays open in the pod netns afterwards.
   */
  async stop(drainMs = 5000): Promise<void> {
    this.#stopped = true;
    this.#wake?.();
    this.#unsubscribe?.();
    for (const s of [this.#outbound, this.#plain, this.#hbone]) if (s?.listening) s.close();
    // GOAWAY: peers open new streams elsewhere, the ones in flight continue.
    for (const s of this.#h2Sessions) if (!s.closed) s.close();
    const { connections, pod, pool } = this.#ctx;
    const deadline = Date.now() + Math.max(0, drainMs);
    while (connections.recordsOf(pod.uid).length > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, Math.min(50, Math.max(1, deadline - Date.now()))));
    }
    for (const rec of connections.recordsOf(pod.uid)) rec.destroy();
    for (const s of this.#h2Sessions) s.destroy();
    pool.closePod(pod.uid);
  }
}
