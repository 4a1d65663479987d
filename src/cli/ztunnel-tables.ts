/**
 * Tables of `ambit ztunnel-config`, with the columns users of `istioctl ztunnel-config` know.
 * Pure functions of the agents' /config_dump answers. With more than one agent a leading AGENT
 * column says which node's agent each row came from (workloads have their own NODE column: the
 * node the pod runs on).
 */
import type { ConfigDump, ConnectionDump } from '../ztunnel/admin/config-dump.ts';
import type { PolicyScope } from '../api/policy.ts';
import { table } from '../local/format.ts';

export interface AgentDump { agent: string; dump: ConfigDump }

export const SECTIONS = ['workloads', 'services', 'policies', 'certificates', 'connections'] as const;
export type Section = (typeof SECTIONS)[number];

function build(dumps: AgentDump[], head: string[], rowsOf: (d: ConfigDump) => string[][]): string {
  const withAgent = dumps.length > 1;
  const rows = dumps.flatMap((d) => rowsOf(d.dump).map((r) => (withAgent ? [d.agent, ...r] : r)));
  return table([withAgent ? ['AGENT', ...head] : head, ...rows]);
}

export function workloadsTable(dumps: AgentDump[]): string {
  return build(dumps, ['NAMESPACE', 'POD NAME', 'ADDRESS', 'NODE', 'WAYPOINT', 'PROTOCOL'], (d) =>
    d.workloads.map((w) => [w.namespace, w.name, w.addresses.join(',') || 'None', w.node || 'None', w.waypoint ? w.waypoint.name : 'None', w.protocol]));
}

export function servicesTable(dumps: AgentDump[]): string {
  return build(dumps, ['NAMESPACE', 'SERVICE NAME', 'SERVICE VIP', 'WAYPOINT', 'ENDPOINTS'], (d) =>
    d.services.map((s) => [
      s.namespace, s.name, s.vips.join(',') || 'None', s.waypoint ? s.waypoint.name : 'None',
      `${s.endpoints.filter((e) => e.ready).length}/${s.endpoints.length}`,
    ]));
}

const SCOPE: Record<PolicyScope, string> = { MESH: 'Global', NAMESPACE: 'Namespace', WORKLOAD: 'WorkloadSelector' };
const title = (s: string) => s.charAt(0) + s.slice(1).toLowerCase();

/** AuthorizationPolicies as istioctl shows them; PeerAuthentications in a second table when there are any. */
export function policiesTable(dumps: AgentDump[]): string {
  const authz = build(dumps, ['NAMESPACE', 'POLICY NAME', 'ACTION', 'SCOPE'], (d) =>
    d.policies.map((p) => [p.namespace, p.name, title(p.action), SCOPE[p.scope] ?? p.scope]));
  if (!dumps.some((d) => d.dump.peerAuthentications.length > 0)) return authz;
  const peer = build(dumps, ['NAMESPACE', 'PEER AUTHENTICATION', 'MODE', 'SCOPE', 'PORT LEVEL'], (d) =>
    d.peerAuthentications.map((p) => [
      p.namespace, p.name, p.mode, SCOPE[p.scope] ?? p.scope,
      Object.entries(p.portLevel).map(([port, mode]) => `${port}:${mode}`).join(',') || 'None',
    ]));
  return `${authz}\n${peer}`;
}

const STATUS: Record<string, string> = { valid: 'Available', renewing: 'Available', expired: 'Expired', failed: 'Unavailable' };

export function certificatesTable(dumps: AgentDump[], now = Date.now()): string {
  const valid = (nb?: string, na?: string) => (nb && na && Date.parse(nb) <= now && now < Date.parse(na) ? 'true' : 'false');
  return build(dumps, ['CERTIFICATE NAME', 'TYPE', 'STATUS', 'VALID CERT', 'SERIAL NUMBER', 'NOT AFTER', 'NOT BEFORE'], (d) =>
    d.certificates.flatMap((c) => [
      [c.identity, 'Leaf', c.serial ? STATUS[c.state] ?? c.state : c.state === 'failed' ? 'Unavailable' : 'Initializing',
        valid(c.notBefore, c.notAfter), c.serial ?? '-', c.notAfter ?? '-', c.notBefore ?? '-'],
      ...c.chain.map((x) => [c.identity, x.type, 'Available', valid(x.notBefore, x.notAfter), x.serial, x.notAfter, x.notBefore]),
    ]));
}

/** `name.namespace`, as istioctl names workloads in this table. */
function podName(ref: string | undefined): string | undefined {
  if (!ref) return undefined;
  const i = ref.indexOf('/');
  return i < 0 ? ref : `${ref.slice(i + 1)}.${ref.slice(0, i)}`;
}

function connectionRow(c: ConnectionDump, d: ConfigDump): string[] {
  const local = d.pods.find((p) => p.uid === c.podUid);
  const workload = local ? `${local.name}.${local.namespace}` : podName(c.direction === 'outbound' ? c.srcWorkload : c.dstWorkload) ?? c.podUid;
  if (c.direction === 'outbound') {
    const target = c.service ?? podName(c.dstWorkload) ?? c.dst;
    return [workload, 'Outbound', c.src, c.hboneAddr ?? c.dst, `${target} (${c.dst})`, c.protocol, String(c.bytesSent), String(c.bytesReceived)];
  }
  const peer = podName(c.srcWorkload) ?? c.srcIdentity ?? '';
  return [workload, 'Inbound', c.dst, c.src, peer, c.protocol, String(c.bytesSent), String(c.bytesReceived)];
}

/** LOCAL is the local pod's end; SENT counts bytes from the client toward the server. */
export function connectionsTable(dumps: AgentDump[]): string {
  return build(dumps, ['WORKLOAD', 'DIRECTION', 'LOCAL', 'REMOTE', 'REMOTE TARGET', 'PROTOCOL', 'SENT', 'RECEIVED'], (d) =>
    d.connections.map((c) => connectionRow(c, d)));
}

export const TABLES: Record<Section, (dumps: AgentDump[]) => string> = {
  workloads: workloadsTable,
  services: servicesTable,
  policies: policiesTable,
  certificates: certificatesTable,
  connections: connectionsTable,
};

/** Every section, each under a title line (what `ztunnel-config all` prints). */
export function allTables(dumps: AgentDump[]): string {
  return SECTIONS.map((s) => `${s.toUpperCase()}\n${TABLES[s](dumps)}`).join('\n');
}
