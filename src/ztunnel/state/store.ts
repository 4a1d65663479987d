/**
 * The agent's one state store: workloads and services as the controller pushed them, indexed for the
 * data path (by uid, by pod IP, by service VIP:port). Written only by the ConfigClient through
 * apply(); everything else reads it through the StateView handle.
 */
import type { MeshService, ServicePort, Workload } from '../../api/mesh.ts';
import { serviceKey } from '../../api/mesh.ts';
import { policyKey, type AuthorizationRecord, type PeerAuthenticationRecord } from '../../api/policy.ts';
import { errorMessage } from '../../shared/errors.ts';
import { logger } from '../../shared/log.ts';
import { authorizationProblem, peerAuthenticationProblem, serviceProblem, workloadProblem } from './validate.ts';

const log = logger('agent.state');

export interface StateView {
  workloadByUid(uid: string): Workload | undefined;
  workloadByAddress(ip: string): Workload | undefined;
  serviceByAddress(ip: string, port: number): { service: MeshService; port: ServicePort } | undefined;
  service(key: string): MeshService | undefined;
  workloads(): Workload[];
  services(): MeshService[];
  /** Every AuthorizationPolicy of the mesh (all namespaces), sorted by namespace/name. */
  authorizations(): AuthorizationRecord[];
  /** Every PeerAuthentication of the mesh, sorted by namespace/name. */
  peerAuthentications(): PeerAuthenticationRecord[];
  /** Bumped whenever authorizations or peer authentications change (re-check open connections). */
  readonly policyGeneration: number;
  /** Called after each applied change (one call per batch). Returns an unsubscribe function. */
  onChange(cb: () => void): () => void;
  readonly version: string;
}

/** One batch of changes, applied atomically (one onChange call). */
export interface StateDelta {
  workloads?: { upsert?: Workload[]; remove?: string[] };
  /** Services are keyed `namespace/name`. */
  services?: { upsert?: MeshService[]; remove?: string[] };
  /** Keyed `namespace/name`. */
  authorizations?: { upsert?: AuthorizationRecord[]; remove?: string[] };
  peerAuthentications?: { upsert?: PeerAuthenticationRecord[]; remove?: string[] };
  /** The controller's version for this state, shown by `version`. */
  version?: string;
}

export interface Rejection {
  kind: 'workload' | 'service' | 'authorization' | 'peerAuthentication';
  /** uid, or `namespace/name` for services (as sent). */
  name: string;
  reason: string;
}

/** Normalise an address for lookups (IPv4-mapped IPv6 as sockets report it, upper-case hex). */
export function normalizeIP(ip: string): string {
  const lower = ip.toLowerCase();
  return lower.startsWith('::ffff:') && lower.includes('.') ? lower.slice(7) : lower;
}

export class StateStore implements StateView {
  #workloads = new Map<string, Workload>();
  #services = new Map<string, MeshService>();
  /** ip -> uids claiming it (the latest claim wins; more than one only for odd pods like host-network). */
  #byAddress = new Map<string, string[]>();
  /** `vip|port` -> service key */
  #byVipPort = new Map<string, string>();
  #authz = new Map<string, AuthorizationRecord>();
  #peerAuthn = new Map<string, PeerAuthenticationRecord>();
  #authzList: AuthorizationRecord[] | undefined;
  #peerAuthnList: PeerAuthenticationRecord[] | undefined;
  #policyGeneration = 0;
  #listeners = new Set<() => void>();
  #version = '';
  #generation = 0;
  #workloadList: Workload[] | undefined;
  #serviceList: MeshService[] | undefined;

  get version(): string { return this.#version; }
  /** Number of applied batches that changed something. */
  get generation(): number { return this.#generation; }

  workloadByUid(uid: string): Workload | undefined {
    return this.#workloads.get(uid);
  }

  workloadByAddress(ip: string): Workload | undefined {
    const uids = this.#byAddress.get(normalizeIP(ip));
    return uids && uids.length > 0 ? this.#workloads.get(uids[uids.length - 1]) : undefined;
  }

  serviceByAddress(ip: string, port: number): { service: MeshService; port: ServicePort } | undefined {
    const key = this.#byVipPort.get(`${normalizeIP(ip)}|${port}`);
    const service = key === undefined ? undefined : this.#services.get(key);
    const p = service?.ports.find((x) => x.port === port && x.protocol === 'TCP') ?? service?.ports.find((x) => x.port === port);
    return service && p ? { service, port: p } : undefined;
  }

  service(key: string): MeshService | undefined {
    return this.#services.get(key);
  }

  workloads(): Workload[] {
    this.#workloadList ??= [...this.#workloads.values()];
    return this.#workloadList;
  }

  services(): MeshService[] {
    this.#serviceList ??= [...this.#services.values()];
    return this.#serviceList;
  }

  authorizations(): AuthorizationRecord[] {
    this.#authzList ??= sortedValues(this.#authz);
    return this.#authzList;
  }

  peerAuthentications(): PeerAuthenticationRecord[] {
    this.#peerAuthnList ??= sortedValues(this.#peerAuthn);
    return this.#peerAuthnList;
  }

  get policyGeneration(): number { return this.#policyGeneration; }

  onChange(cb: () => void): () => void {
    this.#listeners.add(cb);
    return () => this.#listeners.delete(cb);
  }

  /**
   * Apply a batch: valid records replace or add, removals delete, invalid records are refused (the
   * previous record, if any, stays). Returns the refused ones and whether anything changed.
   */
  apply(delta: StateDelta): { rejected: Rejection[]; changed: boolean } {
    const rejected: Rejection[] = [];
    let changed = false;
    for (const uid of delta.workloads?.remove ?? []) changed = this.#removeWorkload(uid) || changed;
    for (const w of delta.workloads?.upsert ?? []) {
      const reason = workloadProblem(w);
      if (reason) {
        rejected.push({ kind: 'workload', name: typeof w?.uid === 'string' ? w.uid : '?', reason });
        continue;
      }
      this.#removeWorkload(w.uid);
      const rec = Object.freeze(structuredClone(w));
      this.#workloads.set(rec.uid, rec);
      for (const a of rec.addresses) {
        const ip = normalizeIP(a);
        const list = this.#byAddress.get(ip) ?? [];
        list.push(rec.uid);
        this.#byAddress.set(ip, list);
      }
      changed = true;
    }
    for (const key of delta.services?.remove ?? []) changed = this.#removeService(key) || changed;
    for (const s of delta.services?.upsert ?? []) {
      const reason = serviceProblem(s);
      const key = typeof s?.namespace === 'string' && typeof s?.name === 'string' ? serviceKey(s) : '?';
      if (reason) {
        rejected.push({ kind: 'service', name: key, reason });
        continue;
      }
      this.#removeService(key);
      const rec = Object.freeze(structuredClone(s));
      this.#services.set(key, rec);
      for (const vip of rec.vips) for (const p of rec.ports) this.#byVipPort.set(`${normalizeIP(vip)}|${p.port}`, key);
      changed = true;
    }
    const policiesChanged =
      applyKeyed(this.#authz, delta.authorizations, authorizationProblem, 'authorization', rejected) |
      applyKeyed(this.#peerAuthn, delta.peerAuthentications, peerAuthenticationProblem, 'peerAuthentication', rejected);
    if (policiesChanged) {
      changed = true;
      this.#policyGeneration++;
      this.#authzList = undefined;
      this.#peerAuthnList = undefined;
    }
    if (delta.version !== undefined && delta.version !== this.#version) {
      this.#version = delta.version;
    }
    if (changed) {
      this.#generation++;
      if (delta.version === undefined) this.#version = `local-${this.#generation}`;
      this.#workloadList = undefined;
      this.#serviceList = undefined;
      for (const cb of [...this.#listeners]) {
        try {
          cb();
        } catch (err) {
          log.error('state change listener failed', { error: errorMessage(err) });
        }
      }
    }
    return { rejected, changed };
  }

  #removeWorkload(uid: string): boolean {
    const old = this.#workloads.get(uid);
    if (!old) return false;
    this.#workloads.delete(uid);
    for (const a of old.addresses) {
      const ip = normalizeIP(a);
      const list = (this.#byAddress.get(ip) ?? []).filter((u) => u !== uid);
      if (list.length > 0) this.#byAddress.set(ip, list);
      else this.#byAddress.delete(ip);
    }
    return true;
  }

  #removeService(key: string): boolean {
    const old = this.#services.get(key);
    if (!old) return false;
    this.#services.delete(key);
    for (const vip of old.vips) {
      for (const p of old.ports) {
        const k = `${normalizeIP(vip)}|${p.port}`;
        if (this.#byVipPort.get(k) === key) this.#byVipPort.delete(k);
      }
    }
    return true;
  }
}

function sortedValues<T>(m: Map<string, T>): T[] {
  return [...m.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map((e) => e[1]);
}

/** Upserts/removes keyed policy records; refused ones keep their previous version. Returns 1 if anything changed. */
function applyKeyed<T extends { namespace: string; name: string }>(
  map: Map<string, T>, d: { upsert?: T[]; remove?: string[] } | undefined,
  problem: (r: T) => string | undefined, kind: Rejection['kind'], rejected: Rejection[],
): number {
  if (!d) return 0;
  let changed = 0;
  for (const key of d.remove ?? []) if (map.delete(key)) changed = 1;
  for (const r of d.upsert ?? []) {
    const reason = problem(r);
    if (reason) {
      rejected.push({ kind, name: typeof r?.namespace === 'string' && typeof r?.name === 'string' ? policyKey(r) : '?', reason });
      continue;
    }
    map.set(policyKey(r), Object.freeze(structuredClone(r)));
    changed = 1;
  }
  return changed;
}
