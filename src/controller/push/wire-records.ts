/**
 * The control-plane wire records, shared by the controller and the agent without any gRPC library:
 * the message shapes (as @grpc/proto-loader decodes them with keepCase, defaults, oneofs and enums
 * as strings, which control-messages.ts reproduces), the config type URLs, and the mapping of mesh
 * and policy records (src/api/mesh.ts, src/api/policy.ts) to and from those messages. Versions are
 * content hashes, so they survive controller restarts and an agent that reconnects with what it has
 * is sent only what differs.
 */
import { createHash } from 'node:crypto';
import type { Endpoint, MeshService, ServicePort, Workload } from '../../api/mesh.ts';
import type { AuthorizationRecord, AuthzMatch, MtlsMode, PeerAuthenticationRecord } from '../../api/policy.ts';

export const WORKLOAD_TYPE = 'type.ambit.dev/ambit.v1.Workload';
export const SERVICE_TYPE = 'type.ambit.dev/ambit.v1.Service';
export const AUTHORIZATION_TYPE = 'type.ambit.dev/ambit.v1.Authorization';
export const PEER_AUTHENTICATION_TYPE = 'type.ambit.dev/ambit.v1.PeerAuthentication';
export const CONFIG_TYPES = [WORKLOAD_TYPE, SERVICE_TYPE, AUTHORIZATION_TYPE, PEER_AUTHENTICATION_TYPE] as const;
export type ConfigType = (typeof CONFIG_TYPES)[number];
/**
 * DNS name every controller server certificate carries; agents verify it (TLS name override)
 * instead of the IP they dial, which also avoids sending an IP as SNI (not allowed by RFC 6066).
 */
export const CONTROLLER_TLS_NAME = 'ambit-controller';

// ---- wire message shapes (as proto-loader decodes them: keepCase, defaults, oneofs, enums as strings)

export interface PbWaypoint { namespace: string; name: string; address: string }
export interface PbWorkload {
  uid: string; name: string; namespace: string; addresses: string[]; node: string; service_account: string;
  trust_domain: string; protocol: 'TUNNEL_PROTOCOL_UNSPECIFIED' | 'TCP' | 'HBONE'; ready: boolean;
  labels: Record<string, string>; canonical_name: string; canonical_revision: string; waypoint?: PbWaypoint | null;
  services: Record<string, { ports: Record<string, number> }>; workload_name: string;
}
export interface PbServicePort {
  name: string; port: number; target_port?: number; target_port_name?: string; target?: string;
  protocol: string; app_protocol: string;
}
export interface PbEndpoint { workload_uid: string; address: string; ports: Record<string, number>; ready: boolean }
export interface PbService {
  name: string; namespace: string; hostname: string; vips: string[]; ports: PbServicePort[];
  endpoints: PbEndpoint[]; waypoint?: PbWaypoint | null;
}
export interface PbAuthzMatch {
  principals: string[]; not_principals: string[]; namespaces: string[]; not_namespaces: string[];
  source_ips: string[]; not_source_ips: string[]; destination_ips: string[]; not_destination_ips: string[];
  destination_ports: number[]; not_destination_ports: number[];
}
export interface PbAuthorization {
  name: string; namespace: string; scope: string; selector: Record<string, string>; action: string;
  rules: { clauses: { matches: PbAuthzMatch[] }[] }[]; warnings: string[];
}
export interface PbPeerAuthentication {
  name: string; namespace: string; scope: string; selector: Record<string, string>; mode: string;
  port_level: Record<string, string>; created_at: string;
}
export interface PbResource {
  name: string; version: string; workload?: PbWorkload | null; service?: PbService | null;
  authorization?: PbAuthorization | null; peer_authentication?: PbPeerAuthentication | null; resource?: string;
}
export interface PbStatus { code: number; message: string }
export interface DeltaRequest {
  type_url: string; node?: { id: string } | null; initial_resource_versions: Record<string, string>;
  response_nonce: string; error_detail?: PbStatus | null; rejected_resources: string[];
}
export interface DeltaResponse {
  type_url: string; system_version: string; resources: PbResource[]; removed_resources: string[]; nonce: string;
  /** PEM roots; empty from a controller that does not send them. */
  trust_bundle: string;
}
export interface CreateCertificateRequest { csr: string; validity_seconds: number }
export interface CreateCertificateResponse { cert_chain: string; roots: string }

// ---- mapping

function waypointToPb(w: Workload['waypoint']): PbWaypoint | undefined {
  return w ? { namespace: w.namespace, name: w.name, address: w.address ?? '' } : undefined;
}
function waypointFromPb(w: PbWaypoint | null | undefined): Workload['waypoint'] {
  if (!w || (!w.name && !w.namespace)) return undefined;
  return w.address ? { namespace: w.namespace, name: w.name, address: w.address } : { namespace: w.namespace, name: w.name };
}
function portMapFromPb(m: Record<string, number> | undefined): Record<number, number> {
  const out: Record<number, number> = {};
  for (const [k, v] of Object.entries(m ?? {})) out[Number(k)] = v;
  return out;
}

export function workloadToPb(w: Workload): PbWorkload {
  const services: PbWorkload['services'] = {};
  for (const [k, m] of Object.entries(w.services)) services[k] = { ports: { ...m } };
  return {
    uid: w.uid, name: w.name, namespace: w.namespace, addresses: [...w.addresses], node: w.node,
    service_account: w.serviceAccount, trust_domain: w.trustDomain, protocol: w.protocol, ready: w.ready,
    labels: { ...w.labels }, canonical_name: w.canonicalName, canonical_revision: w.canonicalRevision,
    waypoint: waypointToPb(w.waypoint), services, workload_name: w.workloadName ?? '',
  };
}

/** Decode; the result still needs validation (the agent's store does it). */
export function workloadFromPb(p: PbWorkload): Workload {
  const services: Workload['services'] = {};
  for (const [k, m] of Object.entries(p.services ?? {})) services[k] = portMapFromPb(m?.ports);
  const w: Workload = {
    uid: p.uid, name: p.name, namespace: p.namespace, addresses: [...(p.addresses ?? [])], node: p.node,
    serviceAccount: p.service_account, trustDomain: p.trust_domain, protocol: p.protocol as Workload['protocol'],
    ready: p.ready, labels: { ...(p.labels ?? {}) }, canonicalName: p.canonical_name, canonicalRevision: p.canonical_revision,
    services,
  };
  const wp = waypointFromPb(p.waypoint);
  if (wp) w.waypoint = wp;
  if (p.workload_name) w.workloadName = p.workload_name;
  return w;
}

export function serviceToPb(s: MeshService): PbService {
  return {
    name: s.name, namespace: s.namespace, hostname: s.hostname, vips: [...s.vips],
    ports: s.ports.map((p) => ({
      name: p.name ?? '', port: p.port,
      ...(typeof p.targetPort === 'number' ? { target_port: p.targetPort } : { target_port_name: p.targetPort }),
      protocol: p.protocol, app_protocol: p.appProtocol ?? '',
    })),
    endpoints: s.endpoints.map((e) => ({ workload_uid: e.workloadUid, address: e.address, ports: { ...e.ports }, ready: e.ready })),
    waypoint: waypointToPb(s.waypoint),
  };
}

export function serviceFromPb(p: PbService): MeshService {
  const ports: ServicePort[] = (p.ports ?? []).map((x) => {
    const port: ServicePort = {
      port: x.port,
      targetPort: x.target === 'target_port_name' ? (x.target_port_name ?? '') : (x.target_port ?? 0),
      protocol: x.protocol as ServicePort['protocol'],
    };
    if (x.name) port.name = x.name;
    if (x.app_protocol) port.appProtocol = x.app_protocol;
    return port;
  });
  const endpoints: Endpoint[] = (p.endpoints ?? []).map((e) => ({
    workloadUid: e.workload_uid, address: e.address, ports: portMapFromPb(e.ports), ready: e.ready,
  }));
  const s: MeshService = { name: p.name, namespace: p.namespace, hostname: p.hostname, vips: [...(p.vips ?? [])], ports, endpoints };
  const wp = waypointFromPb(p.waypoint);
  if (wp) s.waypoint = wp;
  return s;
}

// Policy enums travel as their names; an unknown or unspecified one decodes as-is and the agent's
// store refuses the record (NACK), as with any other bad field.

function matchToPb(m: AuthzMatch): PbAuthzMatch {
  return {
    principals: [...m.principals], not_principals: [...m.notPrincipals], namespaces: [...m.namespaces], not_namespaces: [...m.notNamespaces],
    source_ips: [...m.sourceIps], not_source_ips: [...m.notSourceIps], destination_ips: [...m.destinationIps], not_destination_ips: [...m.notDestinationIps],
    destination_ports: [...m.destinationPorts], not_destination_ports: [...m.notDestinationPorts],
  };
}
function matchFromPb(p: PbAuthzMatch): AuthzMatch {
  return {
    principals: [...(p.principals ?? [])], notPrincipals: [...(p.not_principals ?? [])],
    namespaces: [...(p.namespaces ?? [])], notNamespaces: [...(p.not_namespaces ?? [])],
    sourceIps: [...(p.source_ips ?? [])], notSourceIps: [...(p.not_source_ips ?? [])],
    destinationIps: [...(p.destination_ips ?? [])], notDestinationIps: [...(p.not_destination_ips ?? [])],
    destinationPorts: [...(p.destination_ports ?? [])], notDestinationPorts: [...(p.not_destination_ports ?? [])],
  };
}
function selectorFromPb(m: Record<string, string> | undefined): Record<string, string> | undefined {
  return m && Object.keys(m).length > 0 ? { ...m } : undefined;
}

export function authorizationToPb(a: AuthorizationRecord): PbAuthorization {
  return {
    name: a.name, namespace: a.namespace, scope: a.scope, selector: { ...(a.selector ?? {}) }, action: a.action,
    rules: a.rules.map((r) => ({ clauses: r.clauses.map((c) => ({ matches: c.map(matchToPb) })) })),
    warnings: [...a.warnings],
  };
}

/** Decode; the result still needs validation (the agent's store does it). */
export function authorizationFromPb(p: PbAuthorization): AuthorizationRecord {
  const a: AuthorizationRecord = {
    name: p.name, namespace: p.namespace, scope: p.scope as AuthorizationRecord['scope'], action: p.action as AuthorizationRecord['action'],
    rules: (p.rules ?? []).map((r) => ({ clauses: (r.clauses ?? []).map((c) => (c.matches ?? []).map(matchFromPb)) })),
    warnings: [...(p.warnings ?? [])],
  };
  const sel = selectorFromPb(p.selector);
  if (sel) a.selector = sel;
  return a;
}

export function peerAuthenticationToPb(p: PeerAuthenticationRecord): PbPeerAuthentication {
  return {
    name: p.name, namespace: p.namespace, scope: p.scope, selector: { ...(p.selector ?? {}) }, mode: p.mode,
    port_level: { ...p.portLevel }, created_at: p.createdAt ?? '',
  };
}

export function peerAuthenticationFromPb(p: PbPeerAuthentication): PeerAuthenticationRecord {
  const portLevel: Record<number, MtlsMode> = {};
  for (const [k, m] of Object.entries(p.port_level ?? {})) portLevel[Number(k)] = m as MtlsMode;
  const r: PeerAuthenticationRecord = { name: p.name, namespace: p.namespace, scope: p.scope as PeerAuthenticationRecord['scope'], mode: p.mode as MtlsMode, portLevel };
  const sel = selectorFromPb(p.selector);
  if (sel) r.selector = sel;
  if (p.created_at) r.createdAt = p.created_at;
  return r;
}

// ---- versions

/** JSON with sorted keys, so equal content gives equal text. */
export function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const keys = Object.keys(v).filter((k) => (v as Record<string, unknown>)[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${stableJson((v as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

export function contentVersion(record: unknown): string {
  return createHash('sha256').update(stableJson(record)).digest('hex').slice(0, 16);
}
