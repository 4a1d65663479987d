/**
 * Header-list checks of RFC 9113 §8.2-8.5 (what makes a request or response "malformed") and the
 * conversion between HPACK's ordered list and the plain object the proxy reads.
 */
import type { HeaderList } from './hpack.ts';
import type { H2Headers } from './stream.ts';

const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);
const REQUEST_PSEUDO = new Set([':method', ':scheme', ':authority', ':path']);

/** Why a header list is malformed, or undefined when it is fine. */
function commonProblem(list: HeaderList, allowedPseudo: Set<string>): string | undefined {
  let regular = false;
  const seen = new Set<string>();
  for (const [name, value] of list) {
    if (name.length === 0) return 'empty header name';
    if (/[A-Z]/.test(name)) return `header name ${JSON.stringify(name)} has upper-case letters`;
    if (/[\0\r\n]/.test(value)) return `header ${name} has a forbidden character in its value`;
    if (name[0] === ':') {
      if (regular) return `pseudo-header ${name} after a regular header`;
      if (!allowedPseudo.has(name)) return `pseudo-header ${name} is not allowed here`;
      if (seen.has(name)) return `pseudo-header ${name} repeated`;
      seen.add(name);
      continue;
    }
    regular = true;
    if (CONNECTION_SPECIFIC.has(name)) return `connection-specific header ${name}`;
    if (name === 'te' && value !== 'trailers') return 'header te other than "trailers"';
  }
  return undefined;
}

export function requestProblem(list: HeaderList): string | undefined {
  const p = commonProblem(list, REQUEST_PSEUDO);
  if (p) return p;
  const h = new Map(list.filter(([n]) => n[0] === ':'));
  const method = h.get(':method');
  if (method === undefined) return 'no :method';
  if (method === 'CONNECT') {
    if (!h.get(':authority')) return 'CONNECT without :authority';
    if (h.has(':scheme') || h.has(':path')) return 'CONNECT with :scheme or :path';
    return undefined;
  }
  if (!h.get(':scheme')) return 'no :scheme';
  if (!h.get(':path')) return 'no or empty :path';
  return undefined;
}

export function responseProblem(list: HeaderList): string | undefined {
  const p = commonProblem(list, new Set([':status']));
  if (p) return p;
  const status = list.find(([n]) => n === ':status')?.[1];
  if (status === undefined || !/^[1-9][0-9][0-9]$/.test(status)) return `bad or missing :status ${JSON.stringify(status)}`;
  return undefined;
}

export function trailersProblem(list: HeaderList): string | undefined {
  return commonProblem(list, new Set());
}

/** Repeated fields are joined as node does (", ", cookies with "; "). */
export function toObject(list: HeaderList): H2Headers {
  const out: H2Headers = Object.create(null);
  for (const [name, value] of list) {
    const prev = out[name];
    out[name] = prev === undefined ? value : `${prev}${name === 'cookie' ? '; ' : ', '}${value}`;
  }
  return out;
}

/** Pseudo-headers first, names lower-cased, values as strings. */
export function toList(headers: Record<string, string | number | string[] | undefined>): HeaderList {
  const pseudo: HeaderList = [];
  const regular: HeaderList = [];
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined) continue;
    const name = k.toLowerCase();
    const target = name[0] === ':' ? pseudo : regular;
    if (Array.isArray(v)) for (const one of v) target.push([name, String(one)]);
    else target.push([name, String(v)]);
  }
  return pseudo.concat(regular);
}
