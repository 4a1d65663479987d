/**
 * `/explain`: why a connection from a pod to ADDRESS:PORT would be routed, allowed or denied.
 * It runs the very functions the data path runs: decideOutbound (the source agent's route) and,
 * for a meshed destination, effectiveMtls + evaluateAuthorization (the destination agent's checks;
 * every agent holds the whole mesh's policies, so the source's agent can answer for both ends).
 */
import type { MeshService, Workload } from '../../api/mesh.ts';
import { workloadIdentity } from '../../api/mesh.ts';
import { AmbitError } from '../../shared/errors.ts';
import type { StateView } from '../state/store.ts';
import { decideOutbound } from '../proxy/decide.ts';
import type { Addr, Route } from '../proxy/types.ts';
import { evaluateAuthorization, type AuthzDecision } from '../authz/evaluate.ts';
import { effectiveMtls } from '../authz/peer-auth.ts';

export interface WorkloadRef {
  uid: string;
  namespace: string;
  name: string;
  node: string;
  protocol: Workload['protocol'];
  identity: string;
  addresses: string[];
}

export interface ExplainEndpoint {
  /** `ip:port` the bytes are delivered to. */
  target: string;
  /** How the bytes travel from the source's node: an HBONE tunnel, or plain TCP. */
  transport: 'HBONE' | 'TCP';
  /** `ip:15008` of the tunnel, for HBONE. */
  hboneAddress?: string;
  /** SPIFFE id the destination must present (HBONE). */
  expectedIdentity?: string;
  workload?: WorkloadRef;
  /** The destination's agent enforces policy (the destination pod is in the mesh). */
  enforced: boolean;
  /** PeerAuthentication mode for the target port (enforced destinations only). */
  mtls?: { mode: 'PERMISSIVE' | 'STRICT'; policy?: string };
  /** Authorization as the destination's agent evaluates it (absent when mTLS refuses first). */
  authz?: AuthzDecision;
  allowed: boolean;
  /** The policy that decided, when one did. */
  decidedBy?: string;
  reason: string;
}

export interface Explanation {
  node: string;
  source: WorkloadRef & { servedHere: boolean };
  destination: {
    address: string;
    port: number;
    service?: { namespace: string; name: string; hostname: string };
  };
  /** The source pod's traffic is captured by its agent (it is enrolled in the mesh). */
  captured: boolean;
  route: { kind: Route['kind'] | 'direct'; code?: string; message?: string };
  /** Every endpoint the route can pick (one for a pod address). */
  endpoints: ExplainEndpoint[];
  verdict: 'allow' | 'deny' | 'reject' | 'depends-on-endpoint';
  summary: string;
}

export interface ExplainInput {
  node: string;
  /** `namespace/name` of the source pod. */
  source: string;
  destination: Addr;
  /** uids of the pods this agent serves. */
  servedUids: ReadonlySet<string>;
}

export function explainConnection(state: StateView, input: ExplainInput): Explanation {
  const [ns, name] = input.source.split('/');
  const src = state.workloads().find((w) => w.namespace === ns && w.name === name);
  if (!src) {
    throw new AmbitError('ZT_EXPLAIN_NO_SOURCE',
      `pod ${input.source} is not in the mesh state of the agent of ${input.node}; check the name (ambit ztunnel-config workloads lists the pods it knows)`);
  }
  const captured = src.protocol === 'HBONE';
  // Pin the endpoint choice to enumerate every endpoint decideOutbound can return.
  const first = decideOutbound(state, src, input.destination, () => 0);
  const routes = [first];
  const svc = first.service;
  if (first.kind !== 'reject' && svc && svc.endpoints.length > 1) {
    const n = svc.endpoints.length;
    for (let i = 1; i < n; i++) {
      const r = decideOutbound(state, src, input.destination, () => (i + 0.5) / n);
      if (r.kind !== 'reject' && !routes.some((x) => x.kind !== 'reject' && x.target === r.target)) routes.push(r);
    }
  }
  const source = { ...ref(src), servedHere: input.servedUids.has(src.uid) };
  const destination = { address: input.destination.address, port: input.destination.port, service: svc ? serviceRef(svc) : undefined };

  if (first.kind === 'reject') {
    return {
      node: input.node, source, destination, captured,
      route: { kind: 'reject', code: first.code, message: first.message },
      endpoints: [],
      verdict: 'reject',
      summary: `rejected by the source's agent: ${first.message}`,
    };
  }
  const endpoints = routes.map((r) => endpoint(state, src, captured, r as Exclude<Route, { kind: 'reject' }>));
  const allowed = endpoints.filter((e) => e.allowed).length;
  const verdict = allowed === endpoints.length ? 'allow' : allowed === 0 ? 'deny' : 'depends-on-endpoint';
  const routeKind = captured ? first.kind : 'direct';
  return {
    node: input.node, source, destination, captured,
    route: { kind: routeKind, message: routeMessage(first, captured) },
    endpoints,
    verdict,
    summary: verdict === 'depends-on-endpoint'
      ? `${allowed} of ${endpoints.length} endpoints allow it; ${endpoints.filter((e) => !e.allowed).map((e) => `${e.target}: ${e.reason}`).join('; ')}`
      : endpoints.length === 1 ? endpoints[0].reason : `the same at every endpoint (${endpoints.length}): ${endpoints[0].reason}`,
  };
}

function endpoint(state: StateView, src: Workload, captured: boolean, r: Exclude<Route, { kind: 'reject' }>): ExplainEndpoint {
  const dst = r.dstWorkload;
  // Without capture the pod's own connection reaches the destination as plain TCP (on its 15006).
  const tunnel = captured && r.kind === 'hbone';
  const base: ExplainEndpoint = {
    target: r.target,
    transport: tunnel ? 'HBONE' : 'TCP',
    hboneAddress: tunnel ? r.hboneAddress : undefined,
    expectedIdentity: tunnel ? r.dstIdentity : undefined,
    workload: dst ? ref(dst) : undefined,
    enforced: dst?.protocol === 'HBONE',
    allowed: true,
    reason: '',
  };
  if (!dst) return { ...base, reason: 'the destination is outside the mesh: no policy applies' };
  if (dst.protocol !== 'HBONE') return { ...base, reason: `${dst.namespace}/${dst.name} is not in the mesh: no policy applies` };
  const [ip, port] = splitTarget(r.target);
  const mtls = effectiveMtls(dst, port, state.peerAuthentications());
  base.mtls = mtls;
  if (!tunnel && mtls.mode === 'STRICT') {
    return {
      ...base, allowed: false, decidedBy: mtls.policy,
      reason: `plaintext refused: PeerAuthentication ${mtls.policy ?? '(mesh default)'} requires mTLS (STRICT) on port ${port}, and a pod outside the mesh has no identity`,
    };
  }
  const authz = evaluateAuthorization(
    { workload: dst, srcIdentity: tunnel ? workloadIdentity(src) : undefined, srcIp: sameFamily(src.addresses, ip), dstIp: ip, dstPort: port },
    state.authorizations(),
  );
  base.authz = authz;
  return { ...base, allowed: authz.allow, decidedBy: authz.policy, reason: authz.reason };
}

function routeMessage(r: Exclude<Route, { kind: 'reject' }>, captured: boolean): string {
  if (!captured) return 'the source pod is not in the mesh: its agent does not capture the connection, it goes out as plain TCP';
  if (r.kind === 'hbone') return `HBONE tunnel (mTLS) to ${r.hboneAddress}, CONNECT ${r.target}`;
  if (r.dstWorkload) return `passthrough: ${r.dstWorkload.namespace}/${r.dstWorkload.name} is not in the mesh, plain TCP to ${r.target}`;
  return `passthrough: ${r.target} is outside the mesh, plain TCP`;
}

function ref(w: Workload): WorkloadRef {
  return { uid: w.uid, namespace: w.namespace, name: w.name, node: w.node, protocol: w.protocol, identity: workloadIdentity(w), addresses: w.addresses };
}

function serviceRef(s: MeshService): { namespace: string; name: string; hostname: string } {
  return { namespace: s.namespace, name: s.name, hostname: s.hostname };
}

function splitTarget(t: string): [string, number] {
  const i = t.lastIndexOf(':');
  return [t.slice(0, i).replace(/^\[|\]$/g, ''), Number(t.slice(i + 1))];
}

/** The source address the destination sees: the pod IP of the destination's family. */
function sameFamily(addresses: string[], dstIp: string): string {
  const v6 = dstIp.includes(':');
  return addresses.find((a) => a.includes(':') === v6) ?? addresses[0] ?? '';
}
