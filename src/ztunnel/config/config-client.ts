/**
 * The agent's end of the control plane: one TLS gRPC channel to the controller (the agent proves
 * its node with a client certificate, or with a projected ServiceAccount token sent as
 * `authorization: Bearer` on every call, read from its file each time as the kubelet rotates it), carrying the
 * delta config stream (applied to the StateStore, ACKed or NACKed) and CreateCertificate calls.
 * When the controller is away the agent keeps serving with its last good state and reconnects with
 * capped exponential backoff; on return it tells the controller what it has
 * (initial_resource_versions), so only differences (including removals) are sent.
 * gRPC is the agent's own lean client (grpc-client.ts) with the hand-written codec
 * (control-messages.ts): the agent loads neither grpc-js nor protobufjs.
 */
import { readFile } from 'node:fs/promises';
import type { MeshService, Workload } from '../../api/mesh.ts';
import { policyKey, type AuthorizationRecord, type PeerAuthenticationRecord } from '../../api/policy.ts';
import { AmbitError, errorMessage, isAmbitError } from '../../shared/errors.ts';
import { logger } from '../../shared/log.ts';
import {
  AUTHORIZATION_TYPE, CONFIG_TYPES, CONTROLLER_TLS_NAME, PEER_AUTHENTICATION_TYPE, SERVICE_TYPE, WORKLOAD_TYPE,
  authorizationFromPb, peerAuthenticationFromPb, serviceFromPb, workloadFromPb, type ConfigType, type PbResource, type DeltaRequest, type DeltaResponse,
} from '../../controller/push/wire-records.ts';
import {
  CREATE_CERTIFICATE_PATH, DELTA_CONFIG_PATH, decodeCreateCertificateResponse, decodeDeltaResponse, encodeCreateCertificateRequest, encodeDeltaRequest,
} from '../../controller/push/control-messages.ts';
import { GRPC, GrpcChannel, grpcStatusName, type GrpcCall, type GrpcStatus } from './grpc-client.ts';
import type { StateDelta, StateStore } from '../state/store.ts';
import { validateRoots, type CsrSigner } from '../identity/credentials.ts';

const log = logger('agent.config');

export type { CsrSigner };

/** Per config type: how a resource decodes, its key, and which StateDelta field it feeds. */
interface Codec<T> {
  body: string;
  field: Exclude<keyof StateDelta, 'version'>;
  decode(r: PbResource): T | undefined;
  key(rec: T): string;
}
const CODECS: Record<ConfigType, Codec<unknown>> = {
  [WORKLOAD_TYPE]: { body: 'workload', field: 'workloads', decode: (r) => (r.workload ? workloadFromPb(r.workload) : undefined), key: (w: Workload) => w.uid } as Codec<Workload>,
  [SERVICE_TYPE]: { body: 'service', field: 'services', decode: (r) => (r.service ? serviceFromPb(r.service) : undefined), key: (s: MeshService) => `${s.namespace}/${s.name}` } as Codec<MeshService>,
  [AUTHORIZATION_TYPE]: { body: 'authorization', field: 'authorizations', decode: (r) => (r.authorization ? authorizationFromPb(r.authorization) : undefined), key: (a: AuthorizationRecord) => policyKey(a) } as Codec<AuthorizationRecord>,
  [PEER_AUTHENTICATION_TYPE]: { body: 'peer authentication', field: 'peerAuthentications', decode: (r) => (r.peer_authentication ? peerAuthenticationFromPb(r.peer_authentication) : undefined), key: (p: PeerAuthenticationRecord) => policyKey(p) } as Codec<PeerAuthenticationRecord>,
};

export interface ConfigClientOptions {
  /** host:port of the controller */
  address: string;
  node: string;
  /** Client certificate and key, or tokenFile. */
  certPem?: string;
  keyPem?: string;
  tokenFile?: string;
  rootsPem: string;
  store: StateStore;
  /** Reconnect backoff bounds (default 100 ms .. 5 s). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** The controller's trust bundle (PEM roots) whenever a response carries one that differs from the last. */
  onTrustBundle?: (rootsPem: string) => void;
}

/** Per-call credentials: the token file, read on every call (the kubelet rotates it). */
function tokenHeaders(file: string): () => Promise<Record<string, string>> {
  return async () => {
    try {
      return { authorization: `Bearer ${(await readFile(file, 'utf8')).trim()}` };
    } catch (err) {
      log.warn('cannot read the service account token', { file, error: errorMessage(err) });
      throw new Error(`cannot read the agent token ${file}: ${errorMessage(err)}`, { cause: err });
    }
  };
}

function controllerChannel(o: ConfigClientOptions): GrpcChannel {
  const common = { address: o.address, rootsPem: o.rootsPem, servername: CONTROLLER_TLS_NAME, keepaliveMs: 10_000, keepaliveTimeoutMs: 5_000 };
  if (o.certPem !== undefined && o.keyPem !== undefined) return new GrpcChannel({ ...common, certPem: o.certPem, keyPem: o.keyPem });
  if (o.tokenFile === undefined) throw new AmbitError('ZT_BAD_CREDS', 'the agent needs a client certificate and key, or a token file, to talk to the controller');
  return new GrpcChannel({ ...common, callHeaders: tokenHeaders(o.tokenFile) });
}

export class ConfigClient {
  #o: ConfigClientOptions;
  /** The last trust bundle the controller sent (its PEM text). */
  #trustBundle = '';
  #channel: GrpcChannel;
  #stream: GrpcCall | undefined;
  /** type -> name -> version of what the store holds (sent back on reconnect). */
  #versions = new Map<ConfigType, Map<string, string>>(CONFIG_TYPES.map((t) => [t, new Map()]));
  /** types that got their first response on the current stream */
  #syncedTypes = new Set<ConfigType>();
  #syncWaiters = new Set<() => void>();
  #syncListeners = new Set<() => void>();
  #attempt = 0;
  #retry: NodeJS.Timeout | undefined;
  #started = false;
  #stopped = false;
  #wasConnected = false;
  /** Counters for tests and the admin API. */
  readonly stats = { responses: 0, resourcesReceived: 0, removalsReceived: 0, nacksSent: 0, reconnects: 0 };

  constructor(o: ConfigClientOptions) {
    this.#o = o;
    this.#channel = controllerChannel(o);
  }

  /** True while the config stream is up and has delivered the full state. */
  get connected(): boolean {
    return this.#stream !== undefined && this.#syncedTypes.size === CONFIG_TYPES.length;
  }

  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#open();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retry);
    const s = this.#stream;
    this.#stream = undefined;
    s?.cancel();
    this.#channel.close();
  }

  /** Resolves once the current stream has delivered the full state (immediately if it has). */
  waitSynced(timeoutMs = 30_000): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(t);
        this.#syncWaiters.delete(done);
        resolve();
      };
      const t = setTimeout(() => {
        this.#syncWaiters.delete(done);
        reject(new AmbitError('ZT_CONTROLLER_UNAVAILABLE', `no config from the controller at ${this.#o.address} within ${timeoutMs} ms; check that it runs and that this node's agent certificate is valid`));
      }, timeoutMs);
      this.#syncWaiters.add(done);
    });
  }

  /** Called every time a (re)connected stream has delivered the full state. Returns an unsubscribe. */
  onSynced(cb: () => void): () => void {
    this.#syncListeners.add(cb);
    return () => this.#syncListeners.delete(cb);
  }

  /** CreateCertificate over the same authenticated channel. */
  readonly signCsr: CsrSigner = async (csrPem, ttlSeconds) => {
    const req = encodeCreateCertificateRequest({ csr: csrPem, validity_seconds: Math.max(0, Math.round(ttlSeconds)) });
    let reply: Buffer;
    try {
      reply = await this.#channel.unary(CREATE_CERTIFICATE_PATH, req, 15_000);
    } catch (err) {
      const d = isAmbitError(err) ? err.details : undefined;
      const status = d?.grpcStatus as number | undefined;
      const message = (d?.grpcMessage as string | undefined) || errorMessage(err);
      const code = status === GRPC.PERMISSION_DENIED || status === GRPC.UNAUTHENTICATED ? 'ZT_CSR_DENIED'
        : status === GRPC.INVALID_ARGUMENT ? 'ZT_CSR_REJECTED' : 'ZT_CONTROLLER_UNAVAILABLE';
      throw new AmbitError(code, `controller ${this.#o.address} did not sign the CSR: ${message}`, { cause: err, details: { grpcCode: status } });
    }
    try {
      const res = decodeCreateCertificateResponse(reply);
      return { certChainPem: res.cert_chain, rootsPem: res.roots };
    } catch (err) {
      throw new AmbitError('ZT_CONTROLLER_UNAVAILABLE', `controller ${this.#o.address} answered the CSR with a malformed message: ${errorMessage(err)}`, { cause: err });
    }
  };

  #open(): void {
    if (this.#stopped) return;
    const stream = this.#channel.call(DELTA_CONFIG_PATH);
    this.#stream = stream;
    this.#syncedTypes.clear();
    stream.on('message', (buf: Buffer) => {
      if (this.#stream !== stream) return;
      let res: DeltaResponse;
      try {
        res = decodeDeltaResponse(buf);
      } catch (err) {
        // without its nonce the response cannot even be NACKed: start over on a new stream
        this.#lost(stream, errorMessage(err));
        return;
      }
      this.#onResponse(stream, res);
    });
    stream.on('status', (st: GrpcStatus) => this.#lost(stream, st.code === GRPC.OK ? 'controller ended the stream' : `${grpcStatusName(st.code)}: ${st.message}`));
    for (const type of CONFIG_TYPES) {
      this.#send(stream, {
        type_url: type,
        node: { id: this.#o.node },
        initial_resource_versions: Object.fromEntries(this.#versions.get(type)!),
        response_nonce: '',
        rejected_resources: [],
      });
    }
  }

  #send(stream: GrpcCall, req: DeltaRequest): void {
    stream.write(encodeDeltaRequest(req));
  }

  #lost(stream: GrpcCall, why: string): void {
    if (this.#stream !== stream) return;
    this.#stream = undefined;
    this.#syncedTypes.clear();
    if (this.#stopped) return;
    const cap = this.#o.maxBackoffMs ?? 5000;
    const base = Math.min(cap, (this.#o.minBackoffMs ?? 100) * 2 ** this.#attempt);
    this.#attempt++;
    // Jitter (80..120 % of the step, within the bounds) so agents do not reconnect in lockstep.
    const delay = Math.round(Math.min(cap, Math.max(this.#o.minBackoffMs ?? 100, base * (0.8 + 0.4 * Math.random()))));
    if (this.#wasConnected || this.#attempt === 1) {
      log.warn('controller connection lost; serving with the last config, reconnecting', { controller: this.#o.address, reason: why, retryMs: delay });
    } else {
      log.debug('controller still unreachable', { controller: this.#o.address, reason: why, retryMs: delay });
    }
    this.#wasConnected = false;
    stream.cancel();
    this.stats.reconnects++;
    this.#retry = setTimeout(() => this.#open(), delay);
  }

  /**
   * A new trust bundle: the agent's identities take it (onTrustBundle), and the next connection to
   * the controller also accepts a server certificate from its roots, so a controller that moved to a
   * new root (after announcing it) is still reachable. A bundle the agent refuses changes neither.
   */
  #takeTrustBundle(bundle: string): void {
    this.#trustBundle = bundle;
    let roots: string;
    try {
      roots = validateRoots(bundle);
    } catch (err) {
      log.warn('trust bundle from the controller not taken', { error: errorMessage(err) });
      return;
    }
    this.#channel.setRoots(this.#o.rootsPem + roots);
    try {
      this.#o.onTrustBundle?.(roots);
    } catch (err) {
      log.warn('trust bundle from the controller not taken by the identities', { error: errorMessage(err) });
    }
  }

  #onResponse(stream: GrpcCall, res: DeltaResponse): void {
    const type = res.type_url as ConfigType;
    this.stats.responses++;
    if (res.trust_bundle && res.trust_bundle !== this.#trustBundle) this.#takeTrustBundle(res.trust_bundle);
    this.stats.resourcesReceived += res.resources.length;
    this.stats.removalsReceived += res.removed_resources.length;
    const versions = this.#versions.get(type);
    if (!versions) {
      this.#send(stream, { type_url: res.type_url, node: { id: this.#o.node }, initial_resource_versions: {}, response_nonce: res.nonce,
        error_detail: { code: GRPC.INVALID_ARGUMENT, message: `unknown type ${res.type_url}` }, rejected_resources: [] });
      return;
    }
    const decodeErrors: { name: string; reason: string }[] = [];
    const decoded: unknown[] = [];
    const sentVersion = new Map<string, string>();
    const codec = CODECS[type];
    for (const r of res.resources) {
      try {
        const rec = codec.decode(r);
        if (rec === undefined) throw new Error(`resource ${r.name} has no ${codec.body} body`);
        const key = codec.key(rec as never);
        if (key !== r.name) throw new Error(`resource name ${r.name} does not match ${codec.body} ${key}`);
        decoded.push(rec);
        sentVersion.set(r.name, r.version);
      } catch (err) {
        decodeErrors.push({ name: r.name, reason: errorMessage(err) });
      }
    }
    const removed = res.removed_resources;
    const { rejected } = this.#o.store.apply({ [codec.field]: { upsert: decoded, remove: removed }, version: res.system_version });
    const refused = [...decodeErrors, ...rejected.map((r) => ({ name: r.name, reason: r.reason }))];
    const refusedNames = new Set(refused.map((r) => r.name));
    for (const name of removed) versions.delete(name);
    for (const [name, v] of sentVersion) if (!refusedNames.has(name)) versions.set(name, v);

    if (refused.length > 0) {
      this.stats.nacksSent++;
      const message = refused.map((r) => `${r.name}: ${r.reason}`).join('; ');
      log.warn('refused config from the controller (NACK); keeping the previous records', { typeUrl: type, refused: refused.length, error: message });
      this.#send(stream, { type_url: type, node: { id: this.#o.node }, initial_resource_versions: {}, response_nonce: res.nonce,
        error_detail: { code: GRPC.INVALID_ARGUMENT, message }, rejected_resources: [...refusedNames] });
    } else {
      this.#send(stream, { type_url: type, node: { id: this.#o.node }, initial_resource_versions: {}, response_nonce: res.nonce, rejected_resources: [] });
    }
    log.debug('config applied', { typeUrl: type, upserts: res.resources.length, removed: removed.length, version: res.system_version });

    if (!this.#syncedTypes.has(type)) {
      this.#syncedTypes.add(type);
      if (this.#syncedTypes.size === CONFIG_TYPES.length) {
        this.#attempt = 0;
        this.#wasConnected = true;
        log.info('config synced with the controller', {
          controller: this.#o.address, workloads: this.#o.store.workloads().length, services: this.#o.store.services().length,
          authorizations: this.#o.store.authorizations().length, peerAuthentications: this.#o.store.peerAuthentications().length,
        });
        for (const w of [...this.#syncWaiters]) w();
        for (const l of [...this.#syncListeners]) l();
      }
    }
  }
}
