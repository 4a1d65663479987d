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
