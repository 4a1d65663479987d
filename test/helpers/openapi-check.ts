/**
 * Two checks of CRD schemas without an API server, for unit tests:
 * - structuralProblems(): the rules apiextensions.k8s.io/v1 enforces for structural schemas that a
 *   typo would break (every node typed, properties only on objects, items exactly on arrays, no
 *   properties next to additionalProperties, x-kubernetes-preserve-unknown-fields only where allowed,
 *   no keyword the API server does not know);
 * - validateObject(): what the API server refuses of an object (types, enums, patterns, bounds,
 *   required, unknown fields as with kubectl's strict field validation, CEL rules via their twins).
 * The kube tests check the same examples against a real API server.
 */
import { celTwins, type Schema } from '../../src/api/crds/schema.ts';

const KEYWORDS = new Set(['type', 'description', 'format', 'properties', 'additionalProperties', 'items', 'required', 'enum',
  'pattern', 'minLength', 'maxLength', 'minimum', 'maximum', 'minItems', 'maxItems', 'minProperties', 'maxProperties',
  'x-kubernetes-int-or-string', 'x-kubernetes-preserve-unknown-fields', 'x-kubernetes-validations', 'default', 'nullable']);

/** Problems as `path: message`; `allowPreserve` lists the paths where preserve-unknown-fields is meant. */
export function structuralProblems(s: Schema, path = '', allowPreserve: readonly string[] = []): string[] {
  const out: string[] = [];
  const at = path || '<root>';
  for (const k of Object.keys(s)) if (!KEYWORDS.has(k)) out.push(`${at}: unknown keyword "${k}"`);
  const free = s['x-kubernetes-int-or-string'] === true || s['x-kubernetes-preserve-unknown-fields'] === true;
  if (!s.type && !free) out.push(`${at}: no type`);
  if (s['x-kubernetes-preserve-unknown-fields'] && !allowPreserve.includes(path)) out.push(`${at}: x-kubernetes-preserve-unknown-fields where it is not meant`);
  if (s.properties && s.type !== 'object') out.push(`${at}: properties on a ${s.type}`);
  if (s.additionalProperties && s.type !== 'object') out.push(`${at}: additionalProperties on a ${s.type}`);
  if (s.properties && s.additionalProperties) out.push(`${at}: properties and additionalProperties together`);
  if ((s.type === 'array') !== (s.items !== undefined)) out.push(`${at}: items must be set exactly on arrays`);
  for (const r of s.required ?? []) if (!s.properties?.[r]) out.push(`${at}: required "${r}" is not a property`);
  if (s.enum && s.type !== 'string' && s.type !== 'integer') out.push(`${at}: enum on a ${s.type}`);
  if (s.pattern !== undefined) {
    try { new RegExp(s.pattern); } catch { out.push(`${at}: pattern does not compile`); }
  }
  for (const [k, v] of Object.entries(s.properties ?? {})) out.push(...structuralProblems(v, `${path}.${k}`, allowPreserve));
  if (s.items) out.push(...structuralProblems(s.items, `${path}[]`, allowPreserve));
  if (s.additionalProperties) out.push(...structuralProblems(s.additionalProperties, `${path}{}`, allowPreserve));
  for (const r of s['x-kubernetes-validations'] ?? []) {
    if (!celTwins.has(r)) out.push(`${at}: CEL rule without a TypeScript twin: ${r.rule}`);
    if (r.fieldPath && !s.properties?.[r.fieldPath.slice(1)]) out.push(`${at}: fieldPath ${r.fieldPath} is not a property`);
  }
  return out;
}

export interface Refusal { field: string; message: string }

const join = (field: string, k: string) => (field ? `${field}.${k}` : k);

const typeOf = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v === 'number' ? (Number.isInteger(v) ? 'integer' : 'number') : typeof v);

/** What the API server would refuse in `value` (empty when valid). Fields as the server names them. */
export function validateObject(s: Schema, value: unknown, field = ''): Refusal[] {
  const out: Refusal[] = [];
  const refuse = (message: string, f = field) => out.push({ field: f, message });
  if (value === null || value === undefined) return out;   // null fields are dropped by the server
  const t = typeOf(value);
  if (s['x-kubernetes-int-or-string']) {
    if (t !== 'integer' && t !== 'string') refuse(`must be an integer or a string, got ${t}`);
  } else if (s.type && !(s.type === t || (s.type === 'number' && t === 'integer'))) {
    refuse(`must be of type ${s.type}, got ${t}`);
    return out;
  }
  if (s.enum && !s.enum.includes(value as string)) refuse(`unsupported value ${JSON.stringify(value)}: supported values ${s.enum.map((e) => JSON.stringify(e)).join(', ')}`);
  if (typeof value === 'string') {
    if (s.pattern !== undefined && !new RegExp(s.pattern, 'u').test(value)) refuse(`${JSON.stringify(value)} should match '${s.pattern}'`);
    if (s.minLength !== undefined && [...value].length < s.minLength) refuse(`should be at least ${s.minLength} chars long`);
    if (s.maxLength !== undefined && [...value].length > s.maxLength) refuse(`may not be longer than ${s.maxLength}`);
  }
  if (typeof value === 'number') {
    if (s.minimum !== undefined && value < s.minimum) refuse(`should be greater than or equal to ${s.minimum}`);
    if (s.maximum !== undefined && value > s.maximum) refuse(`should be less than or equal to ${s.maximum}`);
  }
  if (Array.isArray(value)) {
    if (s.minItems !== undefined && value.length < s.minItems) refuse(`should have at least ${s.minItems} items`);
    if (s.maxItems !== undefined && value.length > s.maxItems) refuse(`must have at most ${s.maxItems} items`);
    value.forEach((v, i) => out.push(...validateObject(s.items!, v, `${field}[${i}]`)));
  }
  if (t === 'object') {
    const o = value as Record<string, unknown>;
    const keys = Object.keys(o);
    if (s.minProperties !== undefined && keys.length < s.minProperties) refuse(`should have at least ${s.minProperties} properties`);
    if (s.maxProperties !== undefined && keys.length > s.maxProperties) refuse(`must have at most ${s.maxProperties} items`);
    for (const r of s.required ?? []) if (o[r] === undefined || o[r] === null) refuse('Required value', join(field, r));
    for (const k of keys) {
      const sub = s.properties?.[k] ?? s.additionalProperties;
      if (sub) out.push(...validateObject(sub, o[k], s.properties ? join(field, k) : `${field}[${k}]`));
      else if (!s['x-kubernetes-preserve-unknown-fields'] && s.properties) refuse(`unknown field "${k}"`, join(field, k));
    }
  }
  // CEL rules run only on values that passed the schema (as the API server does).
  if (out.length === 0) {
    for (const r of s['x-kubernetes-validations'] ?? []) {
      if (!celTwins.get(r)!(value)) refuse(r.message, r.fieldPath ? join(field, r.fieldPath.slice(1)) : field);
    }
  }
  return out;
}
