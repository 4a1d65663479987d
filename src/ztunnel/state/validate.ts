/**
 * Checks on records pushed by the controller, before the agent trusts them for routing. A bad record
 * is refused with a reason (sent back to the controller in the NACK); the agent keeps what it had.
 */
import { isIP } from 'node:net';
import type { MeshService, Workload } from '../../api/mesh.ts';

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
function str(v: unknown, field: string, allowEmpty = false): void {
  if (typeof v !== 'string' || (!allowEmpty && v === '')) throw new Error(`${field} must be a ${allowEmpty ? '' : 'non-empty '}string`);
}
function port(v: unknown, field: string): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) throw new Error(`${field} must be a port 1..65535, got ${JSON.stringify(v)}`);
}
function ips(v: unknown, field: string): void {
  if (!Array.isArray(v)) throw new Error(`${field} must be a list`);
  v.forEach((ip, i) => {
    if (typeof ip !== 'string' || isIP(ip) === 0) throw new Error(`${field}[${i}] must be an IP address, got ${JSON.stringify(ip)}`);
  });
}
function portMap(v: unknown, field: string): void {
  if (!isMap(v)) throw new Error(`${field} must be a map of port to port`);
  for (const [k, p] of Object.entries(v)) {
    port(Number(k), `${field} key`);
    port(p, `${field}[${k}]`);
  }
}
function waypoint(v: unknown, field: string): void {
  if (v === undefined) return;
  if (!isMap(v)) throw new Error(`${field} must be a map`);
  str(v.namespace, `${field}.namespace`);
  str(v.name, `${field}.name`);
  if (v.address !== undefined && (typeof v.address !== 'string' || isIP(v.address) === 0)) throw new Error(`${field}.address must be an IP address`);
}

/** The reason a workload record is unusable, or undefined when it is fine. */
export function workloadProblem(w: unknown): string | undefined {
  try {
    if (!isMap(w)) throw new Error('workload must be a map');
    str(w.uid, 'uid');
    str(w.name, 'name');
    str(w.namespace, 'namespace');
    ips(w.addresses, 'addresses');
    str(w.node, 'node', true);
    str(w.serviceAccount, 'serviceAccount');
    str(w.trustDomain, 'trustDomain');
    if (w.protocol !== 'HBONE' && w.protocol !== 'TCP') throw new Error(`protocol must be HBONE or TCP, got ${JSON.stringify(w.protocol)}`);
    if (typeof w.ready !== 'boolean') throw new Error('ready must be a boolean');
    if (!isMap(w.labels) || Object.values(w.labels).some((x) => typeof x !== 'string')) throw new Error('labels must be a map of string to string');
    str(w.canonicalName, 'canonicalName');
    str(w.canonicalRevision, 'canonicalRevision');
    waypoint(w.waypoint, 'waypoint');
    if (!isMap(w.services)) throw new Error('services must be a map');
    for (const [k, m] of Object.entries(w.services)) portMap(m, `services[${k}]`);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** The reason a service record is unusable, or undefined when it is fine. */
export function serviceProblem(s: unknown): string | undefined {
  try {
    if (!isMap(s)) throw new Error('service must be a map');
    str(s.name, 'name');
    str(s.namespace, 'namespace');
    str(s.hostname, 'hostname');
    ips(s.vips, 'vips');
    if (!Array.isArray(s.ports)) throw new Error('ports must be a list');
    s.ports.forEach((p: unknown, i) => {
      if (!isMap(p)) throw new Error(`ports[${i}] must be a map`);
      port(p.port, `ports[${i}].port`);
      if (typeof p.targetPort === 'string') str(p.targetPort, `ports[${i}].targetPort`);
      else port(p.targetPort, `ports[${i}].targetPort`);
      if (p.protocol !== 'TCP' && p.protocol !== 'UDP' && p.protocol !== 'SCTP') throw new Error(`ports[${i}].protocol must be TCP, UDP or SCTP`);
    });
    if (!Array.isArray(s.endpoints)) throw new Error('endpoints must be a list');
    s.endpoints.forEach((e: unknown, i) => {
      if (!isMap(e)) throw new Error(`endpoints[${i}] must be a map`);
      str(e.workloadUid, `endpoints[${i}].workloadUid`);
      if (typeof e.address !== 'string' || isIP(e.address) === 0) throw new Error(`endpoints[${i}].address must be an IP address, got ${JSON.stringify(e.address)}`);
      portMap(e.ports, `endpoints[${i}].ports`);
      if (typeof e.ready !== 'boolean') throw new Error(`endpoints[${i}].ready must be a boolean`);
    });
    waypoint(s.waypoint, 'waypoint');
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

export function assertValidWorkload(w: unknown): asserts w is Workload {
  const p = workloadProblem(w);
  if (p) throw new Error(p);
}
export function assertValidService(s: unknown): asserts s is MeshService {
  const p = serviceProblem(s);
  if (p) throw new Error(p);
}

const SCOPES = new Set(['MESH', 'NAMESPACE', 'WORKLOAD']);
const MODES = new Set(['UNSET', 'PERMISSIVE', 'STRICT']);

function strList(v: unknown, field: string): void {
  if (!Array.isArray(v)) throw new Error(`${field} must be a list`);
  v.forEach((s, i) => str(s, `${field}[${i}]`));
}
function cidrList(v: unknown, field: string): void {
  if (!Array.isArray(v)) throw new Error(`${field} must be a list`);
  v.forEach((c, i) => {
    const [ip, bits, extra] = typeof c === 'string' ? c.split('/') : [];
    const fam = isIP(ip ?? '');
    const n = Number(bits);
    if (fam === 0 || extra !== undefined || bits === undefined || !Number.isInteger(n) || n < 0 || n > (fam === 4 ? 32 : 128)) {
      throw new Error(`${field}[${i}] must be a CIDR, got ${JSON.stringify(c)}`);
    }
  });
}
function portList(v: unknown, field: string): void {
  if (!Array.isArray(v)) throw new Error(`${field} must be a list`);
  v.forEach((p, i) => port(p, `${field}[${i}]`));
}
function scoped(r: Record<string, unknown>): void {
  str(r.name, 'name');
  str(r.namespace, 'namespace');
  if (!SCOPES.has(r.scope as string)) throw new Error(`scope must be MESH, NAMESPACE or WORKLOAD, got ${JSON.stringify(r.scope)}`);
  if (r.selector !== undefined) {
    if (!isMap(r.selector)) throw new Error('selector must be a map');
    for (const [k, v] of Object.entries(r.selector)) str(v, `selector[${k}]`, true);
  }
  if (r.scope === 'WORKLOAD' && r.selector === undefined) throw new Error('scope WORKLOAD needs a selector');
}

/** The reason an authorization record is unusable, or undefined when it is fine. */
export function authorizationProblem(a: unknown): string | undefined {
  try {
    if (!isMap(a)) throw new Error('authorization must be a map');
    scoped(a);
    if (a.action !== 'ALLOW' && a.action !== 'DENY') throw new Error(`action must be ALLOW or DENY, got ${JSON.stringify(a.action)}`);
    if (!Array.isArray(a.rules)) throw new Error('rules must be a list');
    a.rules.forEach((rule: unknown, i) => {
      if (!isMap(rule) || !Array.isArray(rule.clauses)) throw new Error(`rules[${i}].clauses must be a list`);
      rule.clauses.forEach((clause: unknown, j) => {
        const f = `rules[${i}].clauses[${j}]`;
        if (!Array.isArray(clause)) throw new Error(`${f} must be a list of matches`);
        clause.forEach((m: unknown, k) => {
          const g = `${f}[${k}]`;
          if (!isMap(m)) throw new Error(`${g} must be a map`);
          for (const n of ['principals', 'notPrincipals', 'namespaces', 'notNamespaces'] as const) strList(m[n], `${g}.${n}`);
          for (const n of ['sourceIps', 'notSourceIps', 'destinationIps', 'notDestinationIps'] as const) cidrList(m[n], `${g}.${n}`);
          for (const n of ['destinationPorts', 'notDestinationPorts'] as const) portList(m[n], `${g}.${n}`);
        });
      });
    });
    if (!Array.isArray(a.warnings)) throw new Error('warnings must be a list');
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** The reason a peer authentication record is unusable, or undefined when it is fine. */
export function peerAuthenticationProblem(p: unknown): string | undefined {
  try {
    if (!isMap(p)) throw new Error('peer authentication must be a map');
    scoped(p);
    if (!MODES.has(p.mode as string)) throw new Error(`mode must be UNSET, PERMISSIVE or STRICT, got ${JSON.stringify(p.mode)}`);
    if (!isMap(p.portLevel)) throw new Error('portLevel must be a map');
    for (const [k, m] of Object.entries(p.portLevel)) {
      port(Number(k), 'portLevel key');
      if (!MODES.has(m as string)) throw new Error(`portLevel[${k}] must be UNSET, PERMISSIVE or STRICT, got ${JSON.stringify(m)}`);
    }
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}
