/**
 * Small shape checks for Kubernetes objects read from untrusted manifests. Each returns a problem
 * message (naming what was expected) or undefined; the caller adds the object and field.
 */
import { isIP } from 'node:net';

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** undefined is fine (absent); otherwise every value must be a string. */
export function checkStringMap(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isPlainObject(v)) return `must be a map of string to string, got ${describe(v)}`;
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== 'string') return `value of "${k}" must be a string, got ${describe(val)}`;
  }
  return undefined;
}

export function checkPort(v: unknown): string | undefined {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) {
    return `must be an integer port 1..65535, got ${describe(v)}`;
  }
  return undefined;
}

/** Kubernetes IANA_SVC_NAME: 1-15 chars, lower-case alphanumerics and '-', at least one letter. */
export function checkPortName(v: string): string | undefined {
  if (!/^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$/.test(v) || !/[a-z]/.test(v) || v.includes('--')) {
    return `"${v}" is not a valid port name (1-15 lower-case letters, digits and '-', at least one letter)`;
  }
  return undefined;
}

export function checkIP(v: unknown): string | undefined {
  if (typeof v !== 'string' || isIP(v) === 0) return `must be an IP address, got ${describe(v)}`;
  return undefined;
}

export function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return 'a list';
  if (v === null) return 'null';
  if (typeof v === 'object') return 'a map';
  return `${typeof v} ${String(v)}`;
}
