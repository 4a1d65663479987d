/**
 * 15008 in the pod netns: the HBONE server. mTLS with the pod's certificate; the client certificate
 * must chain to the mesh roots (OpenSSL checks) and carry a SPIFFE id of our trust domain (checked
 * here). Each CONNECT names `<one of this pod's IPs>:<port>`; after authorization the agent connects
 * to the app from inside the pod netns with the client pod's IP as source (IP_TRANSPARENT).
 * Answers: 200 tunnel up, 400 bad authority, 401 denied, 405 not CONNECT, 503 app unreachable.
 */
import type * as http2 from 'node:http2';
import * as tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { PORTS } from '../../api/constants.ts';
import { spiffeId } from '../../api/mesh.ts';
import { errorMessage } from '../../shared/errors.ts';
import { logger } from '../../shared/log.ts';
import { checkPeerTrustDomain, hboneServerOptions, verifyHboneClient } from '../../shared/tls.ts';
import type { TlsCredentials } from '../../shared/tls.ts';
import { isLocalAddress, localWorkload, workloadName } from './context.ts';
import type { ProxyContext } from './context.ts';
import { unmapV4 } from './decide.ts';
import { H2Session } from '../h2/session.ts';
import { E_INTERNAL_ERROR } from '../h2/frames.ts';
import { connectionWindow, h2Settings, HBONE_H2, H2_MAX_SESSION_MEMORY, leanSessionOptions } from './h2-settings.ts';
import { pipeBoth } from './pipe.ts';
import { connectToApp } from './app-connect.ts';
import { destinationService } from '../state/destination-service.ts';
import { formatAddr, parseAddr } from './types.ts';

const log = logger('inbound');
/** The agent's own listeners in the pod: a CONNECT to them would loop back into us. */
const AGENT_PORTS = new Set<number>([PORTS.outbound, PORTS.inboundPlaintext, PORTS.hbone]);

/** Peer identity per HTTP/2 session (the certificate is parsed once). */
const peers = new WeakMap<object, string>();

/** What the handler uses of a server stream: node's ServerHttp2Stream and the lean H2Stream both fit. */
type ServerStream = Duplex & {
  respond(headers: Record<string, string | number>, options: { endStream: boolean }): void;
  close(code?: number): void;
  readonly headersSent: boolean;
};

/** The session side of a stream: its TLS socket (peer certificate, addresses), and how to drop it. */
interface StreamSession {
  key: object;
  socket: tls.TLSSocket;
  destroy(): void;
}

/**
 * The :15008 server. Both implementations are a tls.Server that emits 'session' (for drain on
 * stop) with objects that have close()/destroy()/closed and a 'close' event.
 */
export function createHboneServer(ctx: ProxyContext, creds: TlsCredentials): tls.Server {
  return HBONE_H2 === 'lean' ? createLeanServer(ctx, creds) : createNodeServer(ctx, creds);
}

/**
 * Our options with rejectUnauthorized off: node drops a client it rejected without telling us why,
 * so the chain verdict (OpenSSL's, against the same roots) is read in refusePeer, right after the
 * handshake and before any byte is read, and the refusal is logged with its reason.
 */
function serverOptions(creds: TlsCredentials): tls.TlsOptions {
  return { ...hboneServerOptions(creds), rejectUnauthorized: false };
}

function refusePeer(ctx: ProxyContext, sock: tls.TLSSocket): boolean {
  const verdict = verifyHboneClient(sock, ctx.trustDomain);
  if (verdict.identity !== undefined) return false;
  log.warn('refusing HBONE peer', {
    pod: `${ctx.pod.namespace}/${ctx.pod.name}`,
    remote: `${unmapV4(sock.remoteAddress ?? '')}:${sock.remotePort ?? 0}`,
    reason: verdict.reason,
  });
  sock.destroy();
  return true;
}

function createLeanServer(ctx: ProxyContext, creds: TlsCredentials): tls.Server {
  const server = tls.createServer(serverOptions(creds));
  server.on('secureConnection', (sock: tls.TLSSocket) => {
    sock.setNoDelay(true);
    sock.on('error', () => {}); // the session reports it
    if (refusePeer(ctx, sock)) return;
    if (sock.alpnProtocol !== 'h2') {
      log.debug('HBONE peer did not negotiate ALPN h2', { remote: sock.remoteAddress, alpn: String(sock.alpnProtocol) });
      sock.destroy();
      return;
    }
    const session = new H2Session(sock, false, leanSessionOptions());
    session.on('error', (err) => log.debug('session error', { error: errorMessage(err) }));
    const ss: StreamSession = { key: session, socket: sock, destroy: () => session.destroy() };
    session.on('stream', (stream: ServerStream, headers: http2.IncomingHttpHeaders) => {
      handleStream(ctx, stream, headers, ss).catch((err) => {
        log.error('inbound handler failed', { error: errorMessage(err) });
        if (!stream.destroyed) stream.close(E_INTERNAL_ERROR);
      });
    });
    server.emit('session', session);
  });
  server.on('tlsClientError', (err, sock) => {
    log.debug('HBONE TLS handshake failed', { remote: sock.remoteAddress, error: errorMessage(err) });
  });
  return server;
}

function createNodeServer(ctx: ProxyContext, creds: TlsCredentials): http2.Http2SecureServer {
  // Loaded only in this mode: node:http2 (and the node:http it pulls in) costs the lean agent RSS.
  const server = process.getBuiltinModule('node:http2').createSecureServer({
    ...serverOptions(creds),
    allowHTTP1: false,
    settings: h2Settings(),
    maxSessionMemory: H2_MAX_SESSION_MEMORY,
  });
  server.on('secureConnection', (sock: tls.TLSSocket) => {
    sock.setNoDelay(true);
    refusePeer(ctx, sock);
  });
  server.on('session', (session) => {
    session.on('error', (err) => log.debug('session error', { error: errorMessage(err) }));
    try {
      session.setLocalWindowSize(connectionWindow());
    } catch {
      // session already gone
    }
  });
  server.on('stream', (stream, headers) => {
    const session = stream.session;
    if (!session) return;
    const ss: StreamSession = { key: session, socket: tlsSocketOf(session), destroy: () => session.destroy() };
    handleStream(ctx, stream, headers, ss).catch((err) => {
      log.error('inbound handler failed', { error: errorMessage(err) });
      if (!stream.destroyed) stream.close(E_INTERNAL_ERROR);
    });
  });
  server.on('tlsClientError', (err, sock) => {
    log.debug('HBONE TLS handshake failed', { remote: sock.remoteAddress, error: errorMessage(err) });
  });
  return server;
}

/** The underlying TLS socket of an HTTP/2 session (session.socket is a guarding proxy over it). */
function tlsSocketOf(session: http2.Http2Session): tls.TLSSocket {
  return session.socket as tls.TLSSocket;
}

/** SPIFFE id of the session's peer if it is in our trust domain; parsed once per session. */
function peerIdentity(session: StreamSession, trustDomain: string): string | undefined {
  let id = peers.get(session.key);
  if (id === undefined) {
    id = checkPeerTrustDomain(session.socket, trustDomain)?.spiffeId;
    if (id) peers.set(session.key, id);
  }
  return id;
}

async function handleStream(ctx: ProxyContext, stream: ServerStream, headers: http2.IncomingHttpHeaders, session: StreamSession): Promise<void> {
  stream.on('error', () => {}); // reported through the connection record once piped
  const reply = (status: number): void => {
    if (stream.destroyed || stream.headersSent) return;
    stream.respond({ ':status': status }, { endStream: true });
  };
  if (headers[':method'] !== 'CONNECT') return reply(405);
  const sock = session.socket;
  const srcIdentity = peerIdentity(session, ctx.trustDomain);
  if (!srcIdentity) return void session.destroy(); // handshake check failed: no stream is served
  const srcIp = unmapV4(sock.remoteAddress ?? '');
  const srcPort = sock.remotePort ?? 0;
  const authority = String(headers[':authority'] ?? '');
  const target = parseAddr(authority);
  const me = localWorkload(ctx);
  const srcWorkload = ctx.state.workloadByAddress(srcIp);
  const rec = ctx.connections.open({
    direction: 'inbound',
    podUid: ctx.pod.uid,
    src: formatAddr(srcIp, srcPort),
    dst: authority,
    hboneAddr: formatAddr(unmapV4(sock.localAddress ?? ''), sock.localPort ?? 0),
    srcIdentity,
    dstIdentity: spiffeId(ctx.trustDomain, ctx.pod.namespace, ctx.pod.serviceAccount),
    srcWorkload: workloadName(srcWorkload),
    dstWorkload: workloadName(me),
    service: target ? destinationService(ctx.state, undefined, me, target.port)?.hostname : undefined,
    protocol: 'HBONE',
  });
  if (!target || !isLocalAddress(ctx, unmapV4(target.address)) || AGENT_PORTS.has(target.port)) {
    reply(400);
    rec.close(`ZT_BAD_AUTHORITY: CONNECT authority ${JSON.stringify(authority)} is not ip:port of pod ${ctx.pod.namespace}/${ctx.pod.name} (${ctx.pod.ips.join(', ')}) or names an agent port`);
    return;
  }
  const authz = {
    pod: ctx.pod,
    workload: me,
    srcIdentity,
    srcIp,
    srcWorkload,
    dstIp: unmapV4(target.address),
    dstPort: target.port,
    transport: 'hbone' as const,
  };
  const app = await connectToApp(ctx, rec, authz, { address: authz.dstIp, port: target.port }, reply);
  if (!app) return;
  if (stream.destroyed) {
    rec.close('HBONE stream closed before the app connection was ready');
    app.destroy();
    return;
  }
  stream.respond({ ':status': 200 }, { endStream: false });
  pipeBoth(stream, app, rec);
}
