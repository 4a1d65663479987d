/**
 * A small builder for structural OpenAPI v3 schemas (the subset apiextensions.k8s.io/v1 accepts),
 * so Ambit's CRD schemas read like the Istio reference tables they follow. scripts/gen-crds.ts
 * renders them to controller/crds/*.yaml.
 *
 * CEL rules carry a TypeScript twin of what they check (`check`), kept out of the YAML: the unit
 * tests run example objects through both the schema and the twins without an API server, and the
 * kube tests check the real rules with one.
 */

export interface CelRule {
  rule: string;
  message: string;
  /** JSONPath of the field the message is about, relative to the node (e.g. `.portLevelMtls`). */
  fieldPath?: string;
  reason?: 'FieldValueInvalid' | 'FieldValueForbidden' | 'FieldValueRequired' | 'FieldValueDuplicate';
}

export interface Schema {
  type?: 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean';
  description?: string;
  format?: string;
  properties?: Record<string, Schema>;
  additionalProperties?: Schema;
  items?: Schema;
  required?: string[];
  enum?: (string | number)[];
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  minItems?: number;
  maxItems?: number;
  minProperties?: number;
  maxProperties?: number;
  'x-kubernetes-int-or-string'?: boolean;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-validations'?: CelRule[];
}

/** The TypeScript twin of a CEL rule: true when `self` passes. */
export type CelTwin = (self: any) => boolean;
export const celTwins = new WeakMap<CelRule, CelTwin>();

type Opts = Omit<Schema, 'type' | 'properties' | 'items' | 'additionalProperties'>;

export const str = (description?: string, o: Opts = {}): Schema => ({ type: 'string', ...(description ? { description } : {}), ...o });
export const bool = (description?: string): Schema => ({ type: 'boolean', ...(description ? { description } : {}) });
export const int = (description?: string, o: Opts = {}): Schema => ({ type: 'integer', format: 'int32', ...(description ? { description } : {}), ...o });
export const uint = (description?: string, o: Opts = {}): Schema => int(description, { minimum: 0, maximum: 4294967295, ...o, format: 'int64' });
export const num = (description?: string, o: Opts = {}): Schema => ({ type: 'number', format: 'double', ...(description ? { description } : {}), ...o });
export const oneOfStrings = (values: readonly string[], description?: string): Schema => str(description, { enum: [...values] });

export function obj(properties: Record<string, Schema>, description?: string, o: Opts = {}): Schema {
  return { type: 'object', ...(description ? { description } : {}), properties, ...o };
}
export function arr(items: Schema, description?: string, o: Opts = {}): Schema {
  return { type: 'array', ...(description ? { description } : {}), items, ...o };
}
export function map(values: Schema, description?: string, o: Opts = {}): Schema {
  return { type: 'object', ...(description ? { description } : {}), additionalProperties: values, ...o };
}
export const strings = (description?: string, o: Opts = {}): Schema => arr(str(), description, o);
export const stringMap = (description?: string, o: Opts = {}): Schema => map(str(), description, o);

/** Adds a CEL rule (with its twin) to a schema node. */
export function cel(s: Schema, rule: CelRule, twin: CelTwin): Schema {
  celTwins.set(rule, twin);
  (s['x-kubernetes-validations'] ??= []).push(rule);
  return s;
}

/** Marks fields required. */
export function req(s: Schema, ...fields: string[]): Schema {
  for (const f of fields) if (!s.properties?.[f]) throw new Error(`required field ${f} is not a property`);
  return { ...s, required: [...(s.required ?? []), ...fields] };
}

// ---------------------------------------------------------------- shared field shapes

export const port = (description = 'A port number 1..65535.'): Schema => int(description, { minimum: 1, maximum: 65535, format: 'int32' });

/** Port numbers written as strings (AuthorizationPolicy ports, PeerAuthentication keys). */
export const PORT_STRING = '^([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$';
export const isPortString = (s: unknown) => typeof s === 'string' && new RegExp(PORT_STRING).test(s);

/** Go-style durations as Istio writes them: 1.5s, 100ms, 1h30m. */
export const DURATION = '^([0-9]+(\\.[0-9]+)?(h|m|s|ms|us|µs|ns))+$';
export const duration = (description?: string): Schema => str(description, { pattern: DURATION, maxLength: 64 });

export const percent = (description = 'Percentage 0..100 (fractions allowed).'): Schema =>
  obj({ value: num('The percentage, 0.0 to 100.0.', { minimum: 0, maximum: 100 }) }, description);

export const workloadSelector = (): Schema => obj({
  matchLabels: stringMap('Labels of the pods this applies to; empty or absent selects every workload of the namespace.', { maxProperties: 4096 }),
}, 'Which workloads of the namespace this applies to.');

export const policyTargetRef = (): Schema => req(obj({
  group: str('Group of the target (empty for the core group).', { maxLength: 253 }),
  kind: str('Kind of the target, e.g. Service, Gateway, ServiceEntry.', { minLength: 1, maxLength: 63 }),
  name: str('Name of the target.', { minLength: 1, maxLength: 253 }),
  namespace: str('Namespace of the target (must be the policy\'s own).', { maxLength: 63 }),
}, 'A resource the policy attaches to (a waypoint\'s Gateway or a Service).'), 'kind', 'name');

export const exportTo = (): Schema => strings('Namespaces this is visible to: "." this namespace, "*" all (default).');

/** Istio's StringMatch: exactly one of exact, prefix, regex. */
export const stringMatch = (description?: string): Schema => obj({
  exact: str('Exact string match.'),
  prefix: str('Prefix-based match.'),
  regex: str('RE2 regular expression match.'),
}, description ?? 'One of exact, prefix or regex.', { maxProperties: 1 });

/** The status Ambit's controller writes: conditions (Accepted, ...) as Kubernetes conventions say. */
export const meshStatus = (): Schema => obj({
  observedGeneration: int('The generation of the spec the controller last processed.', { format: 'int64', minimum: 0 }),
  conditions: arr(req(obj({
    type: str('Condition type, e.g. Accepted.', { maxLength: 316 }),
    status: oneOfStrings(['True', 'False', 'Unknown']),
    reason: str('Machine-readable reason, e.g. Accepted, Invalid, UnsupportedValue.', { maxLength: 1024 }),
    message: str('What the operator should know (names the field).', { maxLength: 32768 }),
    observedGeneration: int(undefined, { format: 'int64', minimum: 0 }),
    lastTransitionTime: str(undefined, { format: 'date-time' }),
  }), 'type', 'status'), 'Current state of the resource as the controller sees it.', { maxItems: 16 }),
}, 'Written by the Ambit controller.');
