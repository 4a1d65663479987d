/**
 * One agent's config stream on the controller: the delta-xDS bookkeeping. For each subscribed type
 * it tracks the versions the agent has (`known`: what was sent and not refused), sends only the
 * difference between that and the current config, and settles each response on ACK/NACK.
 * A NACKed resource is rolled back in `known` (the agent kept its previous record) and that exact
 * version is not sent again; a newer version is.
 */
import * as grpc from '@grpc/grpc-js';
import { logger } from '../../shared/log.ts';
import { CONFIG_TYPES, type ConfigType, type DeltaRequest, type DeltaResponse, type PbResource } from './wire.ts';

const log = logger('controller.push');

/** The controller's current config of one type. */
export interface TypeSnapshot {
  systemVersion: string;
  resources: Map<string, { version: string; resource: PbResource }>;
}

export type PushEvent =
  | { kind: 'response'; node: string; typeUrl: string; nonce: string; resources: string[]; removed: string[] }
  | { kind: 'ack'; node: string; typeUrl: string; nonce: string }
  | { kind: 'nack'; node: string; typeUrl: string; nonce: string; error: string; rejected: string[] };

export interface AgentStatus {
  node: string;
  peer: string;
  connectedAt: string;
  /** type_url -> number of resources the agent has ACKed */
  acked: Record<string, number>;
  pendingResponses: number;
  nacks: number;
}

interface Subscription {
  known: Map<string, string>;
  acked: Map<string, string>;
  /** name -> version the agent refused; not re-sent until the version changes */
  rejected: Map<string, string>;
}

interface Pending {
  type: ConfigType;
  changes: { name: string; prev: string | undefined; next: string | undefined }[];
}

type Call = grpc.ServerDuplexStream<DeltaRequest, DeltaResponse>;

export class AgentSession {
  readonly node: string;
  readonly peer: string;
  readonly connectedAt = new Date();
  #call: Call;
  #current: (type: ConfigType) => TypeSnapshot | undefined;
  #emit: (e: PushEvent) => void;
  #trustBundle: () => string;
  #subs = new Map<ConfigType, Subscription>();
  /** Subscriptions that arrived before the controller had its first config. */
  #waiting = new Set<ConfigType>();
  #pending = new Map<string, Pending>();
  #nonce = 0;
  #nacks = 0;
  #closed = false;

  constructor(o: { node: string; call: Call; current: (type: ConfigType) => TypeSnapshot | undefined; emit: (e: PushEvent) => void; trustBundle: () => string }) {
    this.node = o.node;
    this.#call = o.call;
    this.peer = o.call.getPeer();
    this.#current = o.current;
    this.#emit = o.emit;
    this.#trustBundle = o.trustBundle;
  }

  get closed(): boolean { return this.#closed; }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#call.end();
    } catch {
      // already gone
    }
  }

  markClosed(): void { this.#closed = true; }

  /** Throws an error with a grpc status code when the request is unacceptable. */
  handle(req: DeltaRequest): void {
    if (this.#closed) return;
    const type = req.type_url as ConfigType;
    if (!CONFIG_TYPES.includes(type)) {
      log.warn('agent asked for an unknown type; ignored', { node: this.node, typeUrl: req.type_url });
      return;
    }
    if (!req.response_nonce) {
      this.#subs.set(type, { known: new Map(Object.entries(req.initial_resource_versions ?? {})), acked: new Map(Object.entries(req.initial_resource_versions ?? {})), rejected: new Map() });
      log.info('agent subscribed', { node: this.node, typeUrl: type, has: Object.keys(req.initial_resource_versions ?? {}).length });
      if (this.#current(type)) this.#send(type, true);
      else this.#waiting.add(type);
      return;
    }
    const pending = this.#pending.get(req.response_nonce);
    if (!pending) {
      log.debug('response for an unknown nonce ignored', { node: this.node, nonce: req.response_nonce });
      return;
    }
    this.#pending.delete(req.response_nonce);
    const sub = this.#subs.get(pending.type);
    if (!sub) return;
    const detail = req.error_detail;
    if (detail && (detail.code !== 0 || detail.message)) {
      this.#nacks++;
      const rejected = new Set(req.rejected_resources.length > 0 ? req.rejected_resources : pending.changes.map((c) => c.name));
      log.warn('agent rejected config (NACK); it keeps its previous records for these', {
        node: this.node, typeUrl: pending.type, nonce: req.response_nonce, rejected: [...rejected].join(','), error: detail.message,
      });
      for (const c of pending.changes) {
        if (rejected.has(c.name)) {
          // Roll back only if nothing newer was sent for the name since.
          if (sub.known.get(c.name) === c.next) {
            if (c.prev === undefined) sub.known.delete(c.name);
            else sub.known.set(c.name, c.prev);
          }
          if (c.next !== undefined) sub.rejected.set(c.name, c.next);
        } else {
          settle(sub.acked, c);
        }
      }
      this.#emit({ kind: 'nack', node: this.node, typeUrl: pending.type, nonce: req.response_nonce, error: detail.message, rejected: [...rejected] });
      return;
    }
    for (const c of pending.changes) settle(sub.acked, c);
    this.#emit({ kind: 'ack', node: this.node, typeUrl: pending.type, nonce: req.response_nonce });
  }

  /** The controller's config changed: send each subscribed type's difference, if any. */
  push(): void {
    for (const type of this.#waiting) {
      if (this.#current(type)) {
        this.#waiting.delete(type);
        this.#send(type, true);
      }
    }
    for (const type of this.#subs.keys()) if (!this.#waiting.has(type)) this.#send(type, false);
  }

  status(): AgentStatus {
    const acked: Record<string, number> = {};
    for (const [t, s] of this.#subs) acked[t] = s.acked.size;
    return { node: this.node, peer: this.peer, connectedAt: this.connectedAt.toISOString(), acked, pendingResponses: this.#pending.size, nacks: this.#nacks };
  }

  #send(type: ConfigType, force: boolean): void {
    const sub = this.#subs.get(type);
    const cur = this.#current(type);
    if (!sub || !cur || this.#closed) return;
    const resources: PbResource[] = [];
    const removed: string[] = [];
    const changes: Pending['changes'] = [];
    for (const [name, r] of cur.resources) {
      const prev = sub.known.get(name);
      if (prev === r.version) continue;
      if (sub.rejected.get(name) === r.version) continue;
      sub.rejected.delete(name);
      resources.push(r.resource);
      changes.push({ name, prev, next: r.version });
      sub.known.set(name, r.version);
    }
    for (const [name, version] of [...sub.known]) {
      if (cur.resources.has(name)) continue;
      removed.push(name);
      changes.push({ name, prev: version, next: undefined });
      sub.known.delete(name);
      sub.rejected.delete(name);
    }
    if (!force && resources.length === 0 && removed.length === 0) return;
    const nonce = `${++this.#nonce}`;
    this.#pending.set(nonce, { type, changes });
    this.#call.write({ type_url: type, system_version: cur.systemVersion, resources, removed_resources: removed, nonce, trust_bundle: this.#trustBundle() });
    this.#emit({ kind: 'response', node: this.node, typeUrl: type, nonce, resources: resources.map((r) => r.name), removed });
  }
}

function settle(acked: Map<string, string>, c: Pending['changes'][number]): void {
  if (c.next === undefined) acked.delete(c.name);
  else acked.set(c.name, c.next);
}
