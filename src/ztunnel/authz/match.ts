/**
 * Match helpers of L4 authorization: Istio's string forms (exact, `prefix*`, `*suffix`, `*`),
 * CIDRs for IPv4 and IPv6, and the facts taken from a peer's SPIFFE id.
 */
import { isIPv4, isIPv6 } from 'node:net';

/** Istio string match: exact, one leading or trailing `*`, or `*` alone (any value present). */
export function stringMatches(pattern: string, value: string | undefined): boolean {
  if (value === undefined || value === '') return false;
  if (pattern === '*') return true;
  if (pattern.length > 1 && pattern.endsWith('*')) return value.startsWith(pattern.slice(0, -1));
  if (pattern.length > 1 && pattern.startsWith('*')) return value.endsWith(pattern.slice(1));
  return pattern === value;
}

export function anyStringMatches(patterns: readonly string[], value: string | undefined): boolean {
  for (const p of patterns) if (stringMatches(p, value)) return true;
  return false;
}

/** Principal (`td/ns/NS/sa/SA`) and namespace of a peer SPIFFE id; none for plaintext peers. */
export interface PeerFacts {
  principal?: string;
  namespace?: string;
}

export function peerFacts(spiffeId: string | undefined): PeerFacts {
  if (!spiffeId) return {};
  const principal = spiffeId.startsWith('spiffe://') ? spiffeId.slice('spiffe://'.length) : spiffeId;
  const m = /\/ns\/([^/]+)\/sa\/[^/]+$/.exec(principal);
  return { principal, namespace: m ? m[1] : undefined };
}

/** An address as bytes (4 for IPv4, 16 for IPv6); undefined when it is not an address. */
export function addressBytes(ip: string): Uint8Array | undefined {
  let a = ip.trim().toLowerCase();
  const zone = a.indexOf('%');
  if (zone >= 0) a = a.slice(0, zone);
  if (a.startsWith('::ffff:') && isIPv4(a.slice(7))) a = a.slice(7); // IPv4-mapped, as sockets report it
  if (isIPv4(a)) return Uint8Array.from(a.split('.').map(Number));
  if (!isIPv6(a)) return undefined;
  // An embedded dotted quad becomes two groups.
  const lastColon = a.lastIndexOf(':');
  const tail = a.slice(lastColon + 1);
  if (isIPv4(tail)) {
    const q = tail.split('.').map(Number);
    a = `${a.slice(0, lastColon + 1)}${((q[0] << 8) | q[1]).toString(16)}:${((q[2] << 8) | q[3]).toString(16)}`;
  }
  const [head, rest] = a.includes('::') ? a.split('::') : [a, undefined];
  const hs = head ? head.split(':') : [];
  const ts = rest ? rest.split(':') : [];
  const groups = rest === undefined ? hs : [...hs, ...new Array<string>(8 - hs.length - ts.length).fill('0'), ...ts];
  if (groups.length !== 8) return undefined;
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const v = parseInt(g, 16);
    out[i * 2] = v >> 8;
    out[i * 2 + 1] = v & 0xff;
  });
  return out;
}

export interface Cidr {
  bytes: Uint8Array;
  prefix: number;
}

/** `addr/len` or a bare address (/32, /128); undefined when malformed. */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  const bytes = addressBytes(slash < 0 ? text : text.slice(0, slash));
  if (!bytes) return undefined;
  const max = bytes.length * 8;
  if (slash < 0) return { bytes, prefix: max };
  const lenText = text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(lenText)) return undefined;
  const prefix = Number(lenText);
  return prefix <= max ? { bytes, prefix } : undefined;
}

export function cidrContains(c: Cidr, ip: Uint8Array): boolean {
  if (c.bytes.length !== ip.length) return false;
  let bits = c.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((c.bytes[i] & mask) !== (ip[i] & mask)) return false;
  }
  return true;
}

/** Parsed CIDRs by text: policies repeat the same few blocks, and records never change in place. */
const cidrCache = new Map<string, Cidr | null>();
const CIDR_CACHE_MAX = 10_000;

function cachedCidr(text: string): Cidr | undefined {
  let c = cidrCache.get(text);
  if (c === undefined) {
    c = parseCidr(text) ?? null;
    if (cidrCache.size >= CIDR_CACHE_MAX) cidrCache.clear();
    cidrCache.set(text, c);
  }
  return c ?? undefined;
}

/** True when the address is in any of the CIDRs (malformed entries never match; validation refuses them). */
export function anyCidrContains(cidrs: readonly string[], ip: Uint8Array | undefined): boolean {
  if (!ip) return false;
  for (const text of cidrs) {
    const c = cachedCidr(text);
    if (c && cidrContains(c, ip)) return true;
  }
  return false;
}

/** Every selector label present with the same value (an empty selector selects everything). */
export function selectorMatches(selector: Readonly<Record<string, string>> | undefined, labels: Readonly<Record<string, string>>): boolean {
  if (!selector) return true;
  for (const k in selector) if (labels[k] !== selector[k]) return false;
  return true;
}
