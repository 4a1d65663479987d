/**
 * AuthorizationPolicy and PeerAuthentication (security.istio.io/v1, v1beta1) -> the L4 policy
 * records agents enforce (src/api/policy.ts; its comments are the semantics).
 *
 * Validation is per object: a bad field refuses the whole object with the field named (the caller
 * decides what stays in force). What is valid in Istio but cannot be enforced at L4 is not refused:
 * it is handled the way Istio ambient does (fail closed) and reported as a warning on the object.
 */
import { isIP } from 'node:net';
import type { KubeObject } from '../../api/k8s.ts';
import { DEFAULT_ROOT_NAMESPACE, DEFAULT_TRUST_DOMAIN } from '../../api/constants.ts';
import {
  emptyMatch, type AuthorizationRecord, type AuthzClause, type AuthzMatch, type AuthzRule, type MtlsMode,
  type PeerAuthenticationRecord, type PolicyScope,
} from '../../api/policy.ts';
import { Invalid, cmp, must, objectName, type Problem } from './translate.ts';
import { checkPort, checkStringMap, describe, isPlainObject } from './validate.ts';

export interface PolicyOptions {
  /** Namespace whose selector-less policies apply mesh-wide (default istio-system). */
  rootNamespace?: string;
  /** The mesh's trust domain, for service account sources and foreign-principal warnings. */
  trustDomain?: string;
}

export interface PolicyWarning {
  /** e.g. `AuthorizationPolicy demo/allow-get` */
  object: string;
  message: string;
}

export interface PolicyTranslation {
  authorizations: AuthorizationRecord[];
  peerAuthentications: PeerAuthenticationRecord[];
  problems: Problem[];
  warnings: PolicyWarning[];
}

/** What one object became: a record, nothing (AUDIT), or a problem; warnings in every case. */
export interface PolicyObjectResult {
  object: string;
  kind: 'AuthorizationPolicy' | 'PeerAuthentication';
  authorization?: AuthorizationRecord;
  peerAuthentication?: PeerAuthenticationRecord;
  problem?: Problem;
  warnings: string[];
}

const GROUP = 'security.istio.io/';
const VERSIONS = new Set(['security.istio.io/v1', 'security.istio.io/v1beta1']);

/** An AuthorizationPolicy or PeerAuthentication of any security.istio.io version. */
export function isPolicyObject(o: KubeObject): boolean {
  return typeof o.apiVersion === 'string' && o.apiVersion.startsWith(GROUP) && (o.kind === 'AuthorizationPolicy' || o.kind === 'PeerAuthentication');
}

export function translatePolicies(objects: readonly KubeObject[], opts: PolicyOptions = {}): PolicyTranslation {
  const out: PolicyTranslation = { authorizations: [], peerAuthentications: [], problems: [], warnings: [] };
  const seen = new Set<string>();
  for (const o of objects) {
    if (!isPolicyObject(o)) continue;
    const name = objectName(o);
    if (seen.has(name)) {
      out.problems.push({ object: name, field: 'metadata.name', message: 'defined more than once; the first definition is used' });
      continue;
    }
    seen.add(name);
    const r = translatePolicyObject(o, opts);
    for (const message of r.warnings) out.warnings.push({ object: r.object, message });
    if (r.problem) out.problems.push(r.problem);
    if (r.authorization) out.authorizations.push(r.authorization);
    if (r.peerAuthentication) out.peerAuthentications.push(r.peerAuthentication);
  }
  const byKey = (a: { namespace: string; name: string }, b: { namespace: string; name: string }) => cmp(a.namespace, b.namespace) || cmp(a.name, b.name);
  out.authorizations.sort(byKey);
  out.peerAuthentications.sort(byKey);
  return out;
}

/** One policy object (the caller checked isPolicyObject). Never throws for bad input. */
export function translatePolicyObject(o: KubeObject, opts: PolicyOptions = {}): PolicyObjectResult {
  const kind = o.kind as PolicyObjectResult['kind'];
  const object = objectName(o);
  const warnings: string[] = [];
  const ctx: Ctx = {
    rootNamespace: opts.rootNamespace ?? DEFAULT_ROOT_NAMESPACE,
    trustDomain: opts.trustDomain ?? DEFAULT_TRUST_DOMAIN,
    warn: (m) => { if (!warnings.includes(m)) warnings.push(m); },
  };
  try {
    must('apiVersion', VERSIONS.has(o.apiVersion) ? undefined : `must be security.istio.io/v1 (or v1beta1), got ${describe(o.apiVersion)}`);
    must('metadata.name', typeof o.metadata?.name === 'string' && o.metadata.name !== '' ? undefined : `must be a non-empty string, got ${describe(o.metadata?.name)}`);
    const ns: unknown = o.metadata.namespace ?? 'default';
    must('metadata.namespace', typeof ns === 'string' && ns !== '' ? undefined : `must be a non-empty string, got ${describe(ns)}`);
    if (kind === 'AuthorizationPolicy') {
      const authorization = authorizationPolicy(o, ns as string, ctx);
      if (!authorization) return { object, kind, warnings };
      authorization.warnings = [...warnings];
      return { object, kind, authorization, warnings };
    }
    return { object, kind, peerAuthentication: peerAuthentication(o, ns as string, ctx), warnings };
  } catch (err) {
    if (!(err instanceof Invalid)) throw err;
    return { object, kind, problem: { object, field: err.field, message: err.message }, warnings };
  }
}

interface Ctx {
  rootNamespace: string;
  trustDomain: string;
  warn(message: string): void;
}

// ---------------------------------------------------------------- shared pieces

function specOf(o: KubeObject): Record<string, unknown> {
  const spec: unknown = o.spec ?? {};
  must('spec', isPlainObject(spec) ? undefined : `must be a map, got ${describe(spec)}`);
  return spec as Record<string, unknown>;
}

/** Fields we do not know are ignored, with a warning: a typo must not pass silently. */
function unknownFields(v: Record<string, unknown>, at: string, known: readonly string[], ctx: Ctx): void {
  for (const k of Object.keys(v)) if (!known.includes(k)) ctx.warn(`${at}.${k} is not a known field; it is ignored`);
}

/** spec.selector.matchLabels; an empty selector selects like no selector (as Istio). */
function selectorOf(spec: Record<string, unknown>, ctx: Ctx): Record<string, string> | undefined {
  const sel = spec.selector;
  if (sel === undefined || sel === null) return undefined;
  must('spec.selector', isPlainObject(sel) ? undefined : `must be a map with matchLabels, got ${describe(sel)}`);
  const s = sel as Record<string, unknown>;
  unknownFields(s, 'spec.selector', ['matchLabels'], ctx);
  must('spec.selector.matchLabels', checkStringMap(s.matchLabels));
  const labels = (s.matchLabels ?? {}) as Record<string, string>;
  for (const k of Object.keys(labels)) must('spec.selector.matchLabels', k === '' ? 'label keys must not be empty' : undefined);
  return Object.keys(labels).length > 0 ? { ...labels } : undefined;
}

function scopeOf(namespace: string, selector: Record<string, string> | undefined, meshWideSelects: boolean, ctx: Ctx): PolicyScope {
  if (namespace === ctx.rootNamespace && (selector === undefined || meshWideSelects)) return 'MESH';
  return selector ? 'WORKLOAD' : 'NAMESPACE';
}

function stringList(v: unknown, at: string): string[] {
  if (v === undefined || v === null) return [];
  must(at, Array.isArray(v) ? undefined : `must be a list of strings, got ${describe(v)}`);
  (v as unknown[]).forEach((s, i) => must(`${at}[${i}]`, typeof s === 'string' ? undefined : `must be a string, got ${describe(s)}`));
  return [...(v as string[])];
}

/** Exact, `prefix*`, `*suffix` or `*` (Istio's string match). */
function checkPattern(v: string, at: string): void {
  must(at, v === '' ? 'must not be empty' : undefined);
  const inner = v.slice(1, -1);
  must(at, v.length > 1 && (inner.includes('*') || (v.startsWith('*') && v.endsWith('*')))
    ? `"${v}" has "*" in the middle (or at both ends); a value matches exactly, as "prefix*", as "*suffix", or "*" for any`
    : undefined);
}

const PRINCIPAL_FORM = /^[^/]+\/ns\/[^/]+\/sa\/[^/]+$/;

function principals(v: unknown, at: string, ctx: Ctx): string[] {
  const list = stringList(v, at);
  list.forEach((p, i) => {
    const f = `${at}[${i}]`;
    must(f, p.startsWith('spiffe://') ? `"${p}": drop the spiffe:// prefix; principals are written TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT, e.g. "${p.slice(9)}"` : undefined);
    checkPattern(p, f);
    if (p.includes('*')) return;
    if (!PRINCIPAL_FORM.test(p)) ctx.warn(`${f} "${p}" is not of the form TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT; it matches no mesh identity`);
    else if (!p.startsWith(`${ctx.trustDomain}/`)) ctx.warn(`${f} "${p}" names another trust domain than the mesh's (${ctx.trustDomain}); it matches no mesh identity`);
  });
  return list;
}

function patterns(v: unknown, at: string): string[] {
  const list = stringList(v, at);
  list.forEach((p, i) => checkPattern(p, `${at}[${i}]`));
  return list;
}

/** CIDRs or single addresses; a single address becomes /32 or /128. */
function cidrs(v: unknown, at: string): string[] {
  return stringList(v, at).map((c, i) => {
    const f = `${at}[${i}]`;
    const slash = c.indexOf('/');
    const ip = slash < 0 ? c : c.slice(0, slash);
    const fam = isIP(ip);
    must(f, fam === 0 ? `"${c}" is not an IP address or CIDR (e.g. 10.0.0.0/16, 10.0.0.1, fd00::/64)` : undefined);
    const max = fam === 4 ? 32 : 128;
    if (slash < 0) return `${ip}/${max}`;
    const bits = c.slice(slash + 1);
    must(f, /^\d{1,3}$/.test(bits) && Number(bits) <= max ? undefined : `"${c}": the prefix length must be 0..${max}`);
    return `${ip}/${Number(bits)}`;
  });
}

/** Ports as Istio writes them (strings of digits); plain integers are accepted too. */
function ports(v: unknown, at: string): number[] {
  if (v === undefined || v === null) return [];
  must(at, Array.isArray(v) ? undefined : `must be a list of port numbers (as strings), got ${describe(v)}`);
  return (v as unknown[]).map((p, i) => {
    const n = typeof p === 'string' && /^\d{1,5}$/.test(p) ? Number(p) : p;
    must(`${at}[${i}]`, checkPort(n) === undefined ? undefined : `must be a port 1..65535, got ${describe(p)}`);
    return n as number;
  });
}

// ---------------------------------------------------------------- AuthorizationPolicy

const AUTHZ_SPEC_FIELDS = ['selector', 'action', 'rules', 'targetRef', 'targetRefs', 'provider'];

function authorizationPolicy(o: KubeObject, namespace: string, ctx: Ctx): AuthorizationRecord | undefined {
  const spec = specOf(o);
  unknownFields(spec, 'spec', AUTHZ_SPEC_FIELDS, ctx);
  for (const f of ['targetRef', 'targetRefs'] as const) {
    const v = spec[f];
    if (v === undefined || v === null || (Array.isArray(v) && v.length === 0)) continue;
    throw new Invalid(`spec.${f}`, 'policies for waypoints (targetRef/targetRefs) are not supported yet: Ambit has no waypoints; use spec.selector to pick workloads');
  }
  const selector = selectorOf(spec, ctx);
  const action = spec.action ?? 'ALLOW';
  must('spec.action', action === 'CUSTOM' ? 'CUSTOM (external authorization) is not supported; use ALLOW or DENY' : undefined);
  must('spec.action', action === 'ALLOW' || action === 'DENY' || action === 'AUDIT' ? undefined : `must be ALLOW, DENY or AUDIT, got ${describe(action)}`);
  if (spec.provider !== undefined) ctx.warn('spec.provider is only used with action CUSTOM; it is ignored');

  const rawRules = spec.rules ?? [];
  must('spec.rules', Array.isArray(rawRules) ? undefined : `must be a list, got ${describe(rawRules)}`);
  const rules: AuthzRule[] = [];
  (rawRules as unknown[]).forEach((r, i) => {
    const rule = translateRule(r, `spec.rules[${i}]`, action as string, ctx);
    if (rule) rules.push(rule);
  });
  // AUDIT only logs in Istio; the agent has nothing to enforce (checked all the same, so mistakes show).
  if (action === 'AUDIT') {
    ctx.warn('spec.action AUDIT is not enforced at L4 (Ambit has no audit logging); the policy has no effect');
    return undefined;
  }
  const record: AuthorizationRecord = {
    name: o.metadata.name, namespace, scope: scopeOf(namespace, selector, true, ctx), action: action as 'ALLOW' | 'DENY', rules, warnings: [],
  };
  if (selector) record.selector = selector;
  return record;
}

/** One rule; undefined when it is dropped (an ALLOW rule that needs L7). */
function translateRule(raw: unknown, at: string, action: string, ctx: Ctx): AuthzRule | undefined {
  const rule: unknown = raw ?? {};
  must(at, isPlainObject(rule) ? undefined : `must be a map, got ${describe(rule)}`);
  const r = rule as Record<string, unknown>;
  unknownFields(r, at, ['from', 'to', 'when'], ctx);
  const l7: string[] = [];
  const clauses: AuthzClause[] = [];

  const list = (name: 'from' | 'to' | 'when'): unknown[] => {
    const v = r[name] ?? [];
    must(`${at}.${name}`, Array.isArray(v) ? undefined : `must be a list, got ${describe(v)}`);
    return v as unknown[];
  };
  const from = list('from').map((f, j) => source(f, `${at}.from[${j}]`, l7, ctx));
  if (from.length > 0) clauses.push(from);
  const to = list('to').map((t, j) => operation(t, `${at}.to[${j}]`, l7, ctx));
  if (to.length > 0) clauses.push(to);
  list('when').forEach((w, j) => {
    const m = condition(w, `${at}.when[${j}]`, l7, ctx);
    if (m) clauses.push([m]);
  });

  if (l7.length === 0) return { clauses };
  const used = l7.join(', ');
  if (action === 'DENY') {
    ctx.warn(`${at} uses ${used}, which need L7 (a waypoint); only its L4 part is enforced, so it denies more than written`);
    return { clauses };
  }
  ctx.warn(`${at} uses ${used}, which need L7 (a waypoint); the rule is ignored, so it allows nothing (fails closed)`);
  return undefined;
}

const SOURCE_FIELDS = ['principals', 'notPrincipals', 'namespaces', 'notNamespaces', 'ipBlocks', 'notIpBlocks', 'serviceAccounts', 'notServiceAccounts'];
const SOURCE_L7 = ['requestPrincipals', 'notRequestPrincipals', 'remoteIpBlocks', 'notRemoteIpBlocks'];

function source(raw: unknown, at: string, l7: string[], ctx: Ctx): AuthzMatch {
  must(at, isPlainObject(raw) ? undefined : `must be a map with source, got ${describe(raw)}`);
  const f = raw as Record<string, unknown>;
  unknownFields(f, at, ['source'], ctx);
  const s: unknown = f.source;
  const sat = `${at}.source`;
  must(sat, isPlainObject(s) ? undefined : `must be a map, got ${describe(s)}`);
  const src = s as Record<string, unknown>;
  unknownFields(src, sat, [...SOURCE_FIELDS, ...SOURCE_L7], ctx);
  const m = emptyMatch();
  m.principals = [...principals(src.principals, `${sat}.principals`, ctx), ...serviceAccounts(src.serviceAccounts, `${sat}.serviceAccounts`, ctx)];
  m.notPrincipals = [...principals(src.notPrincipals, `${sat}.notPrincipals`, ctx), ...serviceAccounts(src.notServiceAccounts, `${sat}.notServiceAccounts`, ctx)];
  m.namespaces = patterns(src.namespaces, `${sat}.namespaces`);
  m.notNamespaces = patterns(src.notNamespaces, `${sat}.notNamespaces`);
  m.sourceIps = cidrs(src.ipBlocks, `${sat}.ipBlocks`);
  m.notSourceIps = cidrs(src.notIpBlocks, `${sat}.notIpBlocks`);
  for (const k of SOURCE_L7) {
    const v = k.endsWith('IpBlocks') ? cidrs(src[k], `${sat}.${k}`) : stringList(src[k], `${sat}.${k}`);
    if (v.length > 0) l7.push(`${sat}.${k}`);
  }
  // (The lists are known to be lists now.)
  const set = (k: string) => Array.isArray(src[k]) && (src[k] as unknown[]).length > 0;
  must(sat, [...SOURCE_FIELDS, ...SOURCE_L7].some(set) ? undefined : 'must set at least one field (e.g. principals, namespaces, ipBlocks)');
  must(`${sat}.serviceAccounts`, (set('serviceAccounts') || set('notServiceAccounts')) && (set('principals') || set('notPrincipals') || set('namespaces') || set('notNamespaces'))
    ? 'cannot be combined with principals or namespaces in one source (as Istio); use separate from entries'
    : undefined);
  return m;
}

/** `namespace/name` service accounts as exact principals of the mesh's trust domain. */
function serviceAccounts(v: unknown, at: string, ctx: Ctx): string[] {
  return stringList(v, at).map((sa, i) => {
    const parts = sa.split('/');
    must(`${at}[${i}]`, parts.length === 2 && parts.every((p) => p !== '' && !p.includes('*')) ? undefined : `"${sa}" must be NAMESPACE/SERVICE_ACCOUNT (no wildcards)`);
    return `${ctx.trustDomain}/ns/${parts[0]}/sa/${parts[1]}`;
  });
}

const OPERATION_L7 = ['hosts', 'notHosts', 'methods', 'notMethods', 'paths', 'notPaths'];

function operation(raw: unknown, at: string, l7: string[], ctx: Ctx): AuthzMatch {
  must(at, isPlainObject(raw) ? undefined : `must be a map with operation, got ${describe(raw)}`);
  const t = raw as Record<string, unknown>;
  unknownFields(t, at, ['operation'], ctx);
  const oat = `${at}.operation`;
  must(oat, isPlainObject(t.operation) ? undefined : `must be a map, got ${describe(t.operation)}`);
  const op = t.operation as Record<string, unknown>;
  unknownFields(op, oat, ['ports', 'notPorts', ...OPERATION_L7], ctx);
  const m = emptyMatch();
  m.destinationPorts = ports(op.ports, `${oat}.ports`);
  m.notDestinationPorts = ports(op.notPorts, `${oat}.notPorts`);
  for (const k of OPERATION_L7) if (stringList(op[k], `${oat}.${k}`).length > 0) l7.push(`${oat}.${k}`);
  const set = (k: string) => Array.isArray(op[k]) && (op[k] as unknown[]).length > 0;
  must(oat, ['ports', 'notPorts', ...OPERATION_L7].some(set) ? undefined : 'must set at least one field (e.g. ports)');
  return m;
}

const WHEN_L4 = ['source.ip', 'source.namespace', 'source.principal', 'destination.ip', 'destination.port'];
const WHEN_L7 = /^(request\.headers\[[^\]]+\]|request\.auth\.(principal|audiences|presenter)|request\.auth\.claims(\[[^\]]+\])+|remote\.ip|connection\.sni|experimental\.envoy\.filters\..+)$/;

/** One `when` condition as a one-match clause; undefined when its key needs L7. */
function condition(raw: unknown, at: string, l7: string[], ctx: Ctx): AuthzMatch | undefined {
  must(at, isPlainObject(raw) ? undefined : `must be a map with key and values, got ${describe(raw)}`);
  const w = raw as Record<string, unknown>;
  unknownFields(w, at, ['key', 'values', 'notValues'], ctx);
  const key = w.key;
  must(`${at}.key`, typeof key === 'string' && key !== '' ? undefined : `must be a non-empty string, got ${describe(key)}`);
  const values = stringList(w.values, `${at}.values`);
  const notValues = stringList(w.notValues, `${at}.notValues`);
  must(at, values.length + notValues.length > 0 ? undefined : 'must set values or notValues');
  const k = key as string;
  if (WHEN_L7.test(k)) {
    l7.push(`${at} (key ${k})`);
    return undefined;
  }
  must(`${at}.key`, WHEN_L4.includes(k) ? undefined
    : `unknown key "${k}"; at L4 the keys are ${WHEN_L4.join(', ')} (L7 keys such as request.headers[NAME] need a waypoint)`);
  const m = emptyMatch();
  const v = `${at}.values`;
  const nv = `${at}.notValues`;
  switch (k) {
    case 'source.ip': m.sourceIps = cidrs(values, v); m.notSourceIps = cidrs(notValues, nv); break;
    case 'destination.ip': m.destinationIps = cidrs(values, v); m.notDestinationIps = cidrs(notValues, nv); break;
    case 'destination.port': m.destinationPorts = ports(values, v); m.notDestinationPorts = ports(notValues, nv); break;
    case 'source.namespace': m.namespaces = patterns(values, v); m.notNamespaces = patterns(notValues, nv); break;
    case 'source.principal': m.principals = principals(values, v, ctx); m.notPrincipals = principals(notValues, nv, ctx); break;
  }
  return m;
}

// ---------------------------------------------------------------- PeerAuthentication

const MODES = ['UNSET', 'PERMISSIVE', 'STRICT'];

function mtlsMode(v: unknown, at: string): MtlsMode {
  if (v === undefined || v === null) return 'UNSET';
  must(at, v === 'DISABLE' ? 'DISABLE is not supported: Ambit never turns off mTLS between mesh workloads; use PERMISSIVE to also admit plaintext clients' : undefined);
  must(at, typeof v === 'string' && MODES.includes(v) ? undefined : `must be UNSET, PERMISSIVE or STRICT, got ${describe(v)}`);
  return v as MtlsMode;
}

function peerAuthentication(o: KubeObject, namespace: string, ctx: Ctx): PeerAuthenticationRecord {
  const spec = specOf(o);
  unknownFields(spec, 'spec', ['selector', 'mtls', 'portLevelMtls'], ctx);
  const selector = selectorOf(spec, ctx);
  let mode: MtlsMode = 'UNSET';
  if (spec.mtls !== undefined && spec.mtls !== null) {
    must('spec.mtls', isPlainObject(spec.mtls) ? undefined : `must be a map with mode, got ${describe(spec.mtls)}`);
    const mtls = spec.mtls as Record<string, unknown>;
    unknownFields(mtls, 'spec.mtls', ['mode'], ctx);
    mode = mtlsMode(mtls.mode, 'spec.mtls.mode');
  }
  const portLevel: Record<number, MtlsMode> = {};
  const plm = spec.portLevelMtls;
  if (plm !== undefined && plm !== null) {
    must('spec.portLevelMtls', isPlainObject(plm) ? undefined : `must be a map of port to {mode}, got ${describe(plm)}`);
    const entries = Object.entries(plm as Record<string, unknown>);
    must('spec.portLevelMtls', entries.length > 0 && !selector ? 'needs spec.selector (as Istio): port-level modes apply to selected workloads only' : undefined);
    for (const [k, v] of entries) {
      const at = `spec.portLevelMtls[${k}]`;
      must(at, !/^\d{1,5}$/.test(k) || checkPort(Number(k)) !== undefined ? `the key must be a workload port 1..65535, got ${JSON.stringify(k)}` : undefined);
      must(at, isPlainObject(v) ? undefined : `must be a map with mode, got ${describe(v)}`);
      unknownFields(v as Record<string, unknown>, at, ['mode'], ctx);
      portLevel[Number(k)] = mtlsMode((v as Record<string, unknown>).mode, `${at}.mode`);
    }
  }
  const record: PeerAuthenticationRecord = {
    name: o.metadata.name, namespace, scope: scopeOf(namespace, selector, false, ctx), mode, portLevel,
  };
  if (selector) record.selector = selector;
  const created = o.metadata.creationTimestamp;
  if (typeof created === 'string' && created !== '') record.createdAt = created;
  return record;
}
