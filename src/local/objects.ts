/**
 * Pure helpers over the objects the local runtime accepts: which kinds, validation with messages that
 * name the field, images -> commands, ClusterIP allocation, label selection, deployment pod names.
 */
import { createHash, randomInt } from 'node:crypto';
import { join } from 'node:path';
import { AmbitError } from '../shared/errors.ts';
import type { Container, Deployment, KubeObject, Pod, Service, ServicePortSpec } from '../api/k8s.ts';
import { isPolicyObject, translatePolicyObject } from '../controller/translate/policies.ts';
import { NODE_BIN, NODE_PRELOAD, PACKAGE_ROOT } from './instance.ts';

export const ECHO_APP = join(PACKAGE_ROOT, 'src', 'local', 'apps', 'echo.ts');
export const HTTP_GET_APP = join(PACKAGE_ROOT, 'src', 'local', 'apps', 'http-get.ts');

/** Kinds the runtime acts on. */
export const RUNTIME_KINDS = new Set(['Namespace', 'Pod', 'Deployment', 'Service']);
/** Kinds only stored (the controller reads them): service accounts and the mesh's own APIs. */
const STORED_KINDS = new Set(['ServiceAccount', 'ConfigMap']);
const STORED_GROUPS = ['networking.istio.io/', 'security.istio.io/', 'telemetry.istio.io/', 'gateway.networking.k8s.io/'];

export function kindSupport(o: KubeObject): 'runtime' | 'stored' | undefined {
  if (RUNTIME_KINDS.has(o.kind)) return 'runtime';
  if (STORED_KINDS.has(o.kind) || STORED_GROUPS.some((g) => o.apiVersion.startsWith(g))) return 'stored';
  return undefined;
}

export function isNamespaced(kind: string): boolean {
  return kind !== 'Namespace' && kind !== 'Node';
}

/** Apply order, so a manifest with a namespace and its contents works in one go. */
export function applyRank(kind: string): number {
  return ({ Namespace: 0, ServiceAccount: 1, ConfigMap: 1, Service: 2, Deployment: 3, Pod: 4 } as Record<string, number>)[kind] ?? 5;
}

export function bad(what: string, message: string): AmbitError {
  return new AmbitError('LOCAL_BAD_OBJECT', `${what}: ${message}`);
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
export function checkName(what: string, field: string, name: string | undefined): void {
  if (!name || name.length > 63 || !DNS_LABEL.test(name)) {
    throw bad(what, `${field} "${name ?? ''}" must be a DNS label (lower-case letters, digits, '-', at most 63)`);
  }
}

function imageBase(image: string): string {
  return image.replace(/^(docker\.io\/|index\.docker\.io\/)/, '').replace(/@.*$/, '').replace(/:[^/]*$/, '');
}

/** The process a container runs. Built-in images stand in for real ones. */
export function containerCommand(c: Container, what: string): string[] {
  const base = imageBase(c.image ?? '');
  if (c.command && c.command.length > 0) return [...c.command, ...(c.args ?? [])];
  if (base === 'ambit/echo') return [NODE_BIN, ...NODE_PRELOAD, ECHO_APP, ...(c.args ?? [])];
  if (base === 'ambit/sleep') return c.args && c.args.length > 0 ? ['sleep', ...c.args] : ['sleep', 'infinity'];
  throw bad(what, `container "${c.name}": image "${c.image ?? ''}" is not built in (ambit/echo, ambit/sleep); give the container a command to run`);
}

export function validatePodSpec(what: string, spec: Pod['spec'] | undefined): void {
  if (!spec || !Array.isArray(spec.containers) || spec.containers.length === 0) throw bad(what, 'spec.containers must list at least one container');
  const names = new Set<string>();
  spec.containers.forEach((c, i) => {
    checkName(what, `spec.containers[${i}].name`, c.name);
    if (names.has(c.name)) throw bad(what, `spec.containers[${i}].name "${c.name}" is used twice`);
    names.add(c.name);
    if (c.command !== undefined && (!Array.isArray(c.command) || c.command.some((x) => typeof x !== 'string'))) throw bad(what, `spec.containers[${i}].command must be a list of strings`);
    if (c.args !== undefined && (!Array.isArray(c.args) || c.args.some((x) => typeof x !== 'string'))) throw bad(what, `spec.containers[${i}].args must be a list of strings`);
    for (const [j, p] of (c.ports ?? []).entries()) {
      if (!Number.isInteger(p.containerPort) || p.containerPort < 1 || p.containerPort > 65535) throw bad(what, `spec.containers[${i}].ports[${j}].containerPort must be 1-65535`);
    }
    containerCommand(c, what);
  });
  const rp = spec.restartPolicy;
  if (rp !== undefined && rp !== 'Always' && rp !== 'OnFailure' && rp !== 'Never') throw bad(what, `spec.restartPolicy "${rp}" must be Always, OnFailure or Never`);
}

export function matches(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  if (!selector || Object.keys(selector).length === 0) return false;
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

export function validateDeployment(d: Deployment): void {
  const what = `Deployment ${d.metadata.namespace}/${d.metadata.name}`;
  const spec = d.spec;
  if (!spec || !spec.template) throw bad(what, 'spec.template is required');
  const replicas = spec.replicas ?? 1;
  if (!Number.isInteger(replicas) || replicas < 0 || replicas > 100) throw bad(what, `spec.replicas ${String(spec.replicas)} must be an integer 0-100`);
  const sel = spec.selector?.matchLabels;
  if (!sel || Object.keys(sel).length === 0) throw bad(what, 'spec.selector.matchLabels is required');
  if (!matches(sel, spec.template.metadata?.labels)) throw bad(what, 'spec.selector.matchLabels does not match spec.template.metadata.labels');
  validatePodSpec(what, spec.template.spec);
}

export function templateHash(d: Deployment): string {
  return createHash('sha256').update(JSON.stringify(d.spec.template)).digest('hex').slice(0, 10);
}

const NAME_CHARS = 'bcdfghjklmnpqrstvwxz2456789';
export function randomSuffix(): string {
  let s = '';
  for (let i = 0; i < 5; i++) s += NAME_CHARS[randomInt(NAME_CHARS.length)];
  return s;
}

function ipToInt(ip: string): number {
  const p = ip.split('.').map(Number);
  return ((p[0] << 24) >>> 0) + (p[1] << 16) + (p[2] << 8) + p[3];
}
function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}
const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const SVC_BASE = ipToInt('10.96.0.0');

export function inServiceCidr(ip: string): boolean {
  const m = IPV4.exec(ip);
  if (!m || m.slice(1).some((x) => Number(x) > 255)) return false;
  return (ipToInt(ip) & 0xffff0000) >>> 0 === SVC_BASE;
}

/** A free ClusterIP from 10.96.0.0/16 (skipping .0.0, .0.1 and .0.10, kept for kubernetes/dns). */
export function allocateClusterIP(used: Set<string>): string {
  for (let tries = 0; tries < 1000; tries++) {
    const n = SVC_BASE + 11 + randomInt(65536 - 12);
    const ip = intToIp(n);
    if (!used.has(ip)) return ip;
  }
  throw new AmbitError('LOCAL_NO_CLUSTER_IP', 'no free ClusterIP left in 10.96.0.0/16; delete some services');
}

export function validateService(s: Service): void {
  const what = `Service ${s.metadata.namespace}/${s.metadata.name}`;
  const spec = s.spec;
  if (!spec || typeof spec !== 'object') throw bad(what, 'spec is required');
  const type = spec.type ?? 'ClusterIP';
  if (type !== 'ClusterIP') throw bad(what, `spec.type "${type}" is not supported by the local mesh (only ClusterIP)`);
  if (spec.clusterIP && spec.clusterIP !== 'None' && !inServiceCidr(spec.clusterIP)) throw bad(what, `spec.clusterIP "${spec.clusterIP}" is not in the service range 10.96.0.0/16`);
  const ports: ServicePortSpec[] = spec.ports ?? [];
  if (!Array.isArray(ports)) throw bad(what, 'spec.ports must be a list');
  ports.forEach((p, i) => {
    if (!Number.isInteger(p.port) || p.port < 1 || p.port > 65535) throw bad(what, `spec.ports[${i}].port must be 1-65535`);
    const proto = p.protocol ?? 'TCP';
    if (proto !== 'TCP' && proto !== 'UDP' && proto !== 'SCTP') throw bad(what, `spec.ports[${i}].protocol "${String(proto)}" must be TCP, UDP or SCTP`);
    const tp = p.targetPort;
    if (tp !== undefined && typeof tp === 'number' && (!Number.isInteger(tp) || tp < 1 || tp > 65535)) throw bad(what, `spec.ports[${i}].targetPort must be 1-65535 or a port name`);
    if (ports.length > 1 && !p.name) throw bad(what, `spec.ports[${i}].name is required when a service has several ports`);
  });
}

/**
 * AuthorizationPolicy / PeerAuthentication: checked as the controller will translate them, so an
 * invalid one is refused at apply (field named, nothing stored) instead of only in the controller
 * log. Returns the warnings (what L4 cannot enforce as written); other kinds have none.
 */
export function validatePolicy(o: KubeObject): string[] {
  if (!isPolicyObject(o)) return [];
  const r = translatePolicyObject(o);
  if (r.problem) throw bad(r.object, `${r.problem.field}: ${r.problem.message} (not applied; any previous version stays)`);
  return r.warnings;
}

/** The pod port a service port sends to: numeric targetPort, a named container port, or the port itself. */
export function resolveTargetPort(p: ServicePortSpec, pod: Pod): number | undefined {
  const tp = p.targetPort ?? p.port;
  if (typeof tp === 'number') return tp;
  if (/^\d+$/.test(tp)) return Number(tp);
  for (const c of pod.spec.containers) for (const cp of c.ports ?? []) if (cp.name === tp) return cp.containerPort;
  return undefined;
}
