/**
 * Chaining Ambit into a node's CNI configuration, as pure functions over file text: parse a
 * .conf/.conflist/.json the way container runtimes read it, add or update our plugin entry, and take
 * it out again. No file system here (see conf-dir.ts), so every case is testable on strings.
 *
 * What we change is recorded in the file itself, under the top-level key `ambitOriginal`
 * ({file, content}: the file's name and exact text before Ambit touched it). Runtimes ignore unknown
 * top-level keys of a conflist and never pass them to plugins. Uninstall uses it to give back the
 * original bytes when nothing else changed since, and to turn a converted .conf back into one.
 */
import { isDeepStrictEqual } from 'node:util';
import { AmbitError } from '../../shared/errors.ts';
import { SUPPORTED_VERSIONS } from '../config.ts';

export const AMBIT_PLUGIN_TYPE = 'ambit-cni';
export const ORIGINAL_KEY = 'ambitOriginal';
export const CONF_EXTENSIONS = ['.conf', '.conflist', '.json'];

type Json = Record<string, unknown>;

export interface ParsedConf {
  /** Name in the conf dir. */
  file: string;
  /** Where errors say it is (the full path when read from disk). */
  where: string;
  text: string;
  /** .conflist holds a `plugins` list; .conf/.json hold one plugin (runtimes decide by extension). */
  kind: 'conflist' | 'conf';
  json: Json;
}

/** The file a chain or unchain wants written, and the one it wants removed (a converted .conf). */
export interface Rewrite {
  write: { file: string; text: string } | undefined;
  remove: string | undefined;
  action: 'added' | 'updated' | 'unchanged' | 'converted' | 'removed' | 'restored' | 'absent';
}

const bad = (file: string, what: string) => new AmbitError('CNI_INSTALL_BAD_CONFIG', `CNI config ${file}: ${what}`, { details: { file } });

export function kindOf(file: string): 'conflist' | 'conf' {
  return file.endsWith('.conflist') ? 'conflist' : 'conf';
}

/** Parses and checks a CNI config file; errors name the file and what is wrong with it. */
export function parseConf(file: string, text: string, where = file): ParsedConf {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw bad(where, `is not valid JSON (${(err as Error).message}); fix or remove it, the container runtime cannot read it either`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw bad(where, 'must hold a JSON object');
  const o = json as Json;
  const kind = kindOf(file);
  if (kind === 'conflist') {
    if (!Array.isArray(o.plugins)) throw bad(where, `has no "plugins" list (a .conflist must have one; got ${JSON.stringify(o.plugins) ?? 'nothing'})`);
    if (o.plugins.length === 0) throw bad(where, '"plugins" is empty: there is no primary network to chain Ambit after');
    o.plugins.forEach((p, i) => {
      if (p === null || typeof p !== 'object' || Array.isArray(p) || typeof (p as Json).type !== 'string' || (p as Json).type === '') {
        throw bad(where, `plugins[${i}] must be an object with a non-empty "type"`);
      }
    });
    const first = (o.plugins[0] as Json).type;
    if (first === AMBIT_PLUGIN_TYPE) throw bad(where, `plugins[0] is ${AMBIT_PLUGIN_TYPE}, which is a chained plugin: an interface plugin (bridge, calico, cilium-cni, ...) must come first`);
  } else {
    if (Array.isArray(o.plugins)) throw bad(where, `has a "plugins" list but its name does not end in .conflist; runtimes read it as a single plugin: rename it to .conflist`);
    if (typeof o.type !== 'string' || o.type === '') throw bad(where, 'has no "type" (a .conf/.json holds one plugin and needs its type)');
    if (o.type === AMBIT_PLUGIN_TYPE) throw bad(where, `its one plugin is ${AMBIT_PLUGIN_TYPE}, which is a chained plugin and cannot be a node's only network`);
  }
  return { file, where, text, kind, json: o };
}

/** The indentation the file already uses (first indented line), so our rewrite looks like it. */
export function indentOf(text: string): string | number {
  const m = /\n([ \t]+)\S/.exec(text);
  return m ? m[1]! : 2;
}

function serialize(json: Json, like: string): string {
  return JSON.stringify(json, null, indentOf(like)) + (like.endsWith('\n') || like === '' ? '\n' : '');
}

function isOurs(p: unknown): boolean {
  return (p as Json)?.type === AMBIT_PLUGIN_TYPE;
}

/** The conflist file name a .conf/.json becomes (`10-bridge.conf` -> `10-bridge.conflist`). */
export function conflistName(file: string): string {
  return file.replace(/\.(conf|json)$/, '') + '.conflist';
}

/**
 * Add our entry (or bring it to `entry`), once. A .conf becomes a .conflist with the same network
 * name and version: runtimes would not read a plugin list from a .conf.
 */
export function chain(conf: ParsedConf, entry: Json): Rewrite {
  // A version our plugin refuses would fail every pod's start-up once we are chained.
  const v = conf.json.cniVersion;
  if (!SUPPORTED_VERSIONS.includes(v as string)) {
    throw bad(conf.where, `has cniVersion ${JSON.stringify(v) ?? '(none)'}; ambit-cni supports ${SUPPORTED_VERSIONS.join(', ')}, so chaining it there would fail every pod: not chaining`);
  }
  const want = { ...entry, type: AMBIT_PLUGIN_TYPE };
  if (conf.kind === 'conf') {
    const { cniVersion, name, ...plugin } = conf.json;
    const list: Json = { cniVersion, name, plugins: [plugin, want], [ORIGINAL_KEY]: { file: conf.file, content: conf.text } };
    return { write: { file: conflistName(conf.file), text: serialize(list, conf.text) }, remove: conf.file, action: 'converted' };
  }
  const plugins = conf.json.plugins as unknown[];
  const at = plugins.findIndex(isOurs);
  const next: unknown[] = plugins.filter((p, i) => !isOurs(p) || i === at);
  let action: Rewrite['action'];
  if (at < 0) {
    next.push(want);
    action = 'added';
  } else {
    const same = isDeepStrictEqual(plugins[at], want) && next.length === plugins.length;
    if (same) return { write: undefined, remove: undefined, action: 'unchanged' };
    next[next.findIndex(isOurs)] = want;
    action = 'updated';
  }
  const out: Json = { ...conf.json, plugins: next };
  // Remember the pre-Ambit text when we add ourselves; an update keeps what was recorded then. A
  // marker without our entry is stale (someone rewrote the file and kept it): record the file as it
  // is now, minus that marker.
  if (at < 0) {
    const { [ORIGINAL_KEY]: stale, ...withoutMarker } = conf.json;
    out[ORIGINAL_KEY] = { file: conf.file, content: stale === undefined ? conf.text : serialize(withoutMarker, conf.text) };
  }
  return { write: { file: conf.file, text: serialize(out, conf.text) }, remove: undefined, action };
}

function validOriginal(v: unknown): v is { file: string; content: string } {
  return v !== null && typeof v === 'object' && typeof (v as Json).file === 'string' && typeof (v as Json).content === 'string'
    && !(v as { file: string }).file.includes('/') && CONF_EXTENSIONS.some((e) => (v as { file: string }).file.endsWith(e));
}

function tryParse(text: string): unknown {
  try { return JSON.parse(text); } catch { return undefined; }
}

/**
 * Take our entries out. When the rest is what the file was before we chained (as recorded), its
 * original bytes come back (under its original name, for a converted .conf). When something else
 * changed since, the current content minus ours is kept, back in .conf form if it was one and still
 * is a single plugin.
 */
export function unchain(conf: ParsedConf): Rewrite {
  const plugins = conf.kind === 'conflist' ? conf.json.plugins as unknown[] : [];
  const original = conf.json[ORIGINAL_KEY];
  const hasOurs = plugins.some(isOurs);
  if (!hasOurs && original === undefined) return { write: undefined, remove: undefined, action: 'absent' };
  const { [ORIGINAL_KEY]: _marker, ...rest } = conf.json;
  const stripped: Json = { ...rest, plugins: plugins.filter((p) => !isOurs(p)) };
  if (!validOriginal(original)) return { write: { file: conf.file, text: serialize(stripped, conf.text) }, remove: undefined, action: 'removed' };

  const targetFile = original.file;
  const remove = targetFile !== conf.file ? conf.file : undefined;
  let candidate: Json = stripped;
  if (kindOf(targetFile) === 'conf') {
    const left = stripped.plugins as Json[];
    if (left.length !== 1) {
      // Someone else added plugins since: it has to stay a list.
      return { write: { file: conf.file, text: serialize(stripped, conf.text) }, remove: undefined, action: 'removed' };
    }
    const { plugins: _p, cniVersion, name, ...others } = stripped;
    candidate = { cniVersion, name, ...others, ...left[0] };
  }
  if (isDeepStrictEqual(candidate, tryParse(original.content))) {
    return { write: { file: targetFile, text: original.content }, remove, action: 'restored' };
  }
  return { write: { file: targetFile, text: serialize(candidate, original.content) }, remove, action: 'removed' };
}
