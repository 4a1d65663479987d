/**
 * The controller's gRPC server for node agents. An agent proves its node with an agent client
 * certificate (the local mesh), or, on a Kubernetes cluster, with a projected ServiceAccount token
 * in the call's `authorization: Bearer` metadata (checked by a TokenReview; the token's pod names
 * the node). The channel is TLS either way.
 * - DeltaConfig: every agent gets every workload and service (routing needs remote ones) and every
 *   policy (the destination's agent picks those that apply), as deltas.
 * - CreateCertificate: signs a workload CSR only for an identity that has a pod on the caller's node.
 */
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { PeerCertificate } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import type { experimental } from '@grpc/grpc-js';
import type { MeshService, Workload } from '../../api/mesh.ts';
import { serviceKey } from '../../api/mesh.ts';
import { policyKey, type AuthorizationRecord, type PeerAuthenticationRecord } from '../../api/policy.ts';
import { agentNodeFromCert, type CertificateAuthority } from '../ca/ca.ts';
import { AmbitError, errorMessage } from '../../shared/errors.ts';
import { logger } from '../../shared/log.ts';
import { checkPlacement, type PodPlacement } from '../translate/placements.ts';
import type { TokenVerdict } from '../ca/token-review.ts';
import { AgentSession, type AgentStatus, type PushEvent, type TypeSnapshot } from './agent-session.ts';
import {
  AUTHORIZATION_TYPE, CONTROLLER_TLS_NAME, PEER_AUTHENTICATION_TYPE, SERVICE_TYPE, WORKLOAD_TYPE, authorizationToPb, contentVersion,
  controlPlaneService, peerAuthenticationToPb, serviceToPb, workloadToPb,
  type ConfigType, type CreateCertificateRequest, type CreateCertificateResponse, type DeltaRequest, type DeltaResponse,
} from './wire.ts';

const log = logger('controller.push');
const MAX_CERT_TTL_SECONDS = 86400;

export interface PushServerOptions {
  ca: CertificateAuthority;
  host: string;
  /** 0 picks a free port (see start()'s result). */
  port: number;
  /** Re-read the source before refusing a certificate: the pod may have been created a moment ago. */
  refresh?: () => Promise<void>;
  /**
   * Accept callers without an agent client certificate that present a bearer token, and ask this
   * who they are. Without it, a client certificate is required (TLS refuses other callers).
   */
  reviewToken?: (token: string) => Promise<TokenVerdict>;
  /** Ask the source of truth when the snapshot has no pod for an identity on the caller's node. */
  confirmPlacement?: (node: string, namespace: string, serviceAccount: string) => Promise<boolean>;
}

/** Who is calling: the node, and what proved it. */
interface Caller { node: string; via: 'certificate' | 'token' }
type Fail = { code: grpc.status; details: string };

export interface PushConfig {
  workloads: Workload[];
  services: MeshService[];
  authorizations?: AuthorizationRecord[];
  peerAuthentications?: PeerAuthenticationRecord[];
}

export interface PushStats {
  responses: number;
  resourcesSent: number;
  removalsSent: number;
  acks: number;
  nacks: number;
  certificatesIssued: number;
  certificatesDenied: number;
}

export class PushServer {
  #o: PushServerOptions;
  #server: grpc.Server | undefined;
  #sessions = new Set<AgentSession>();
  #current = new Map<ConfigType, TypeSnapshot>();
  #placements: PodPlacement[] = [];
  #listeners = new Set<(e: PushEvent) => void>();
  #port = 0;
  readonly stats: PushStats = { responses: 0, resourcesSent: 0, removalsSent: 0, acks: 0, nacks: 0, certificatesIssued: 0, certificatesDenied: 0 };

  constructor(o: PushServerOptions) {
    this.#o = o;
  }

  get port(): number { return this.#port; }

  /** Bind and serve; resolves with the bound port. */
  async start(): Promise<number> {
    const { ca, host } = this.#o;
    const creds = await ca.issueServerCredentials(serverHosts(host));
    const server = new grpc.Server({ 'grpc.max_send_message_length': -1, 'grpc.max_receive_message_length': 16 * 1024 * 1024 });
    server.addService(controlPlaneService().service, {
      DeltaConfig: (call: grpc.ServerDuplexStream<DeltaRequest, DeltaResponse>) => this.#stream(call),
      CreateCertificate: (call: grpc.ServerUnaryCall<CreateCertificateRequest, CreateCertificateResponse>, cb: grpc.sendUnaryData<CreateCertificateResponse>) =>
        void this.#createCertificate(call).then((r) => cb(null, r), (err: grpc.ServiceError) => cb(err)),
    });
    const tls = this.#o.reviewToken
      ? optionalClientCertCredentials(ca.rootCertPem, creds.certPem, creds.keyPem)
      : grpc.ServerCredentials.createSsl(Buffer.from(ca.rootCertPem), [{ private_key: Buffer.from(creds.keyPem), cert_chain: Buffer.from(creds.certPem) }], true);
    const address = isIP(host) === 6 ? `[${host}]:${this.#o.port}` : `${host}:${this.#o.port}`;
    this.#port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(address, tls, (err, port) => (err ? reject(new AmbitError('CONTROLLER_LISTEN', `cannot listen on ${address}: ${err.message}; is another controller running, or pick another --listen`, { cause: err })) : resolve(port)));
    });
    this.#server = server;
    return this.#port;
  }

  /** End every agent stream (agents keep their state and reconnect) and close the listener. */
  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    for (const s of this.#sessions) s.close();
    this.#sessions.clear();
    if (!server) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => { server.forceShutdown(); resolve(); }, 1000);
      server.tryShutdown(() => { clearTimeout(t); resolve(); });
    });
  }

  /** New config from the translator; each connected agent gets what changed. Absent policy lists mean none. */
  update(config: PushConfig, placements: PodPlacement[]): void {
    this.#placements = placements;
    const workloads: TypeSnapshot['resources'] = new Map();
    for (const w of config.workloads) workloads.set(w.uid, { version: contentVersion(w), resource: { name: w.uid, version: '', workload: workloadToPb(w) } });
    const services: TypeSnapshot['resources'] = new Map();
    for (const s of config.services) {
      const key = serviceKey(s);
      services.set(key, { version: contentVersion(s), resource: { name: key, version: '', service: serviceToPb(s) } });
    }
    const authorizations: TypeSnapshot['resources'] = new Map();
    for (const a of config.authorizations ?? []) {
      const key = policyKey(a);
      authorizations.set(key, { version: contentVersion(a), resource: { name: key, version: '', authorization: authorizationToPb(a) } });
    }
    const peerAuthentications: TypeSnapshot['resources'] = new Map();
    for (const p of config.peerAuthentications ?? []) {
      const key = policyKey(p);
      peerAuthentications.set(key, { version: contentVersion(p), resource: { name: key, version: '', peer_authentication: peerAuthenticationToPb(p) } });
    }
    const all = [[WORKLOAD_TYPE, workloads], [SERVICE_TYPE, services], [AUTHORIZATION_TYPE, authorizations], [PEER_AUTHENTICATION_TYPE, peerAuthentications]] as const;
    for (const [type, resources] of all) {
      for (const r of resources.values()) r.resource.version = r.version;
      const systemVersion = contentVersion([...resources].map(([n, r]) => `${n}@${r.version}`).sort());
      this.#current.set(type, { systemVersion, resources });
    }
    for (const s of this.#sessions) s.push();
  }

  /** Test/debug hook: every response sent, ACK and NACK received. */
  onEvent(cb: (e: PushEvent) => void): () => void {
    this.#listeners.add(cb);
    return () => this.#listeners.delete(cb);
  }

  agents(): AgentStatus[] {
    return [...this.#sessions].map((s) => s.status());
  }

  #emit = (e: PushEvent): void => {
    if (e.kind === 'response') {
      this.stats.responses++;
      this.stats.resourcesSent += e.resources.length;
      this.stats.removalsSent += e.removed.length;
    } else if (e.kind === 'ack') this.stats.acks++;
    else this.stats.nacks++;
    for (const cb of this.#listeners) {
      try {
        cb(e);
      } catch (err) {
        log.error('push event listener failed', { error: errorMessage(err) });
      }
    }
  };

  /** The caller's node from its client certificate or its token; a gRPC error saying why not. */
  async #caller(call: Pick<grpc.ServerUnaryCall<unknown, unknown>, 'metadata' | 'getAuthContext' | 'getPeer'>): Promise<Caller | Fail> {
    const node = callerNode(call);
    if (node) return { node, via: 'certificate' };
    const review = this.#o.reviewToken;
    if (!review) return { code: grpc.status.PERMISSION_DENIED, details: 'client certificate is not an ambit agent certificate (O=ambit-agent, CN=<node>)' };
    const header = call.metadata.get('authorization')[0];
    const m = typeof header === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    if (!m) {
      return { code: grpc.status.UNAUTHENTICATED, details: header === undefined
        ? 'no agent client certificate and no token: send the node agent\'s projected service account token as authorization: Bearer <token>'
        : 'the authorization metadata is not "Bearer <token>"' };
    }
    const v = await review(m[1]);
    if (v.ok) return { node: v.node, via: 'token' };
    const code = v.why === 'denied' ? grpc.status.PERMISSION_DENIED : v.why === 'unavailable' ? grpc.status.UNAVAILABLE : grpc.status.UNAUTHENTICATED;
    return { code, details: v.reason };
  }

  #stream(call: grpc.ServerDuplexStream<DeltaRequest, DeltaResponse>): void {
    // (messages wait in the stream's buffer until the 'data' handler is attached)
    void this.#caller(call).then((c) => {
      if ('code' in c) {
        log.warn('config stream refused', { peer: call.getPeer(), reason: c.details });
        call.emit('error', c);
        return;
      }
      if (call.cancelled) return;
      this.#serve(call, c);
    });
  }

  #serve(call: grpc.ServerDuplexStream<DeltaRequest, DeltaResponse>, { node, via }: Caller): void {
    const session = new AgentSession({ node, call, current: (t) => this.#current.get(t), emit: this.#emit, trustBundle: () => this.#o.ca.rootCertPem });
    this.#sessions.add(session);
    log.info('agent connected', { node, peer: session.peer });
    const done = (why: string) => {
      if (!this.#sessions.delete(session)) return;
      session.markClosed();
      log.info('agent disconnected', { node, peer: session.peer, reason: why });
    };
    call.on('data', (req: DeltaRequest) => {
      const claimed = req.node?.id;
      if (claimed && claimed !== node) {
        log.warn('config stream refused: node in request is not the caller\'s node', { node, claimed, provedBy: via });
        done('node mismatch');
        const proof = via === 'token' ? `the token's pod runs on node ${node}` : `the client certificate is for node ${node}`;
        call.emit('error', { code: grpc.status.PERMISSION_DENIED, details: `request says node ${claimed} but ${proof}` });
        return;
      }
      session.handle(req);
    });
    call.on('end', () => {
      done('agent closed the stream');
      try { call.end(); } catch { /* already closed */ }
    });
    call.on('cancelled', () => done('cancelled'));
    call.on('error', (err) => done(errorMessage(err)));
    call.on('close', () => done('closed'));
  }

  async #createCertificate(call: grpc.ServerUnaryCall<CreateCertificateRequest, CreateCertificateResponse>): Promise<CreateCertificateResponse> {
    const fail = (code: grpc.status, details: string): grpc.ServiceError => Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
    const caller = await this.#caller(call);
    if ('code' in caller) {
      this.stats.certificatesDenied++;
      log.warn('certificate refused: caller not authenticated', { peer: call.getPeer(), reason: caller.details });
      throw fail(caller.code, caller.details);
    }
    const node = caller.node;
    const ca = this.#o.ca;
    let id;
    try {
      id = ca.parseCsrIdentity(call.request.csr);
    } catch (err) {
      this.stats.certificatesDenied++;
      log.warn('certificate refused: bad CSR', { node, error: errorMessage(err) });
      throw fail(grpc.status.INVALID_ARGUMENT, `bad CSR from node ${node}: ${errorMessage(err)}`);
    }
    let check = checkPlacement(this.#placements, node, id.namespace, id.serviceAccount);
    if (!check.ok && this.#o.refresh) {
      await this.#o.refresh().catch(() => {});
      check = checkPlacement(this.#placements, node, id.namespace, id.serviceAccount);
    }
    if (!check.ok && this.#o.confirmPlacement) {
      try {
        if (await this.#o.confirmPlacement(node, id.namespace, id.serviceAccount)) check = { ok: true };
      } catch (err) {
        log.warn('cannot look up pods to confirm a placement', { node, identity: id.spiffeId, error: errorMessage(err) });
      }
    }
    if (!check.ok) {
      this.stats.certificatesDenied++;
      const message = `node ${node} may not get a certificate for ${id.spiffeId}: ${check.reason}`;
      log.warn('certificate refused', { node, identity: id.spiffeId, reason: check.reason });
      throw fail(grpc.status.PERMISSION_DENIED, message);
    }
    const asked = call.request.validity_seconds;
    const ttl = asked > 0 ? Math.min(asked, MAX_CERT_TTL_SECONDS) : undefined;
    try {
      const signed = await ca.signWorkloadCsr(call.request.csr, ttl);
      this.stats.certificatesIssued++;
      log.info('certificate issued', { node, identity: id.spiffeId, ttlSeconds: ttl ?? 'default' });
      return { cert_chain: signed.certChainPem, roots: signed.rootsPem };
    } catch (err) {
      this.stats.certificatesDenied++;
      log.warn('certificate signing failed', { node, identity: id.spiffeId, error: errorMessage(err) });
      throw fail(grpc.status.INVALID_ARGUMENT, `cannot sign CSR for ${id.spiffeId}: ${errorMessage(err)}`);
    }
  }
}

/** The node named by the caller's client certificate, if it is an agent certificate. */
function callerNode(call: { getAuthContext(): { sslPeerCertificate?: PeerCertificate } | null }): string | undefined {
  const raw = call.getAuthContext()?.sslPeerCertificate?.raw;
  if (!raw) return undefined;
  try {
    return agentNodeFromCert(new X509Certificate(raw));
  } catch {
    return undefined;
  }
}

type CertificateProvider = experimental.CertificateProvider;

/**
 * TLS that asks for a client certificate but also lets callers without one in (they must present a
 * token). A certificate is still verified against the root: only a verified one shows in the call's
 * auth context. (grpc-js offers that mode only through certificate providers.)
 */
function optionalClientCertCredentials(rootPem: string, certPem: string, keyPem: string): grpc.ServerCredentials {
  const provider: CertificateProvider = {
    // Delivered a tick later: the server starts listening for updates only after subscribing.
    addCaCertificateListener: (l) => queueMicrotask(() => l({ caCertificate: Buffer.from(rootPem) })),
    removeCaCertificateListener: () => {},
    addIdentityCertificateListener: (l) => queueMicrotask(() => l({ certificate: Buffer.from(certPem), privateKey: Buffer.from(keyPem) })),
    removeIdentityCertificateListener: () => {},
  };
  return grpc.experimental.createCertificateProviderServerCredentials(provider, provider, false);
}

/** SANs for the server certificate: the listen host, or every local address for a wildcard. */
function serverHosts(host: string): string[] {
  if (host !== '0.0.0.0' && host !== '::' && host !== '') return [CONTROLLER_TLS_NAME, host];
  const out = new Set<string>([CONTROLLER_TLS_NAME, '127.0.0.1', 'localhost']);
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.add(a.address.split('%')[0]);
  return [...out];
}
