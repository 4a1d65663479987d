/**
 * A disk cache of Ambit's TypeScript sources with their types stripped. Node strips types with a
 * WebAssembly build of swc that stays resident: ~17-30 MB of RSS in every Ambit process (the node
 * agent's memory budget is 60 MB). With this load hook a process whose sources are in the cache
 * never instantiates it. Entries are keyed by the source's content hash and the Node version, so
 * an edited file is simply a miss; a read-only install (a container image) just skips the write.
 * Plain JavaScript on purpose: a .ts file here would need the stripper to load.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { stripTypeScriptTypes } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const PACKAGE_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CACHE_DIR = process.env.AMBIT_TS_CACHE || join(PACKAGE_ROOT, 'node_modules', '.cache', 'ambit-ts-strip');

let dirReady = false;

/** The JavaScript for a .ts source: from the cache, or stripped now (and stored when possible). */
export function strippedSource(path) {
  const source = readFileSync(path, 'utf8');
  const key = createHash('sha256').update(process.version).update('\0').update(source).digest('hex').slice(0, 40);
  const entry = join(CACHE_DIR, `${key}.js`);
  try {
    return readFileSync(entry, 'utf8');
  } catch {
    const js = quietStrip(source);
    store(entry, js);
    return js;
  }
}

/** Strips every .ts file under `dir` into the cache (install time), returns how many. */
export function warm(dir) {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) {
      strippedSource(join(e.parentPath, e.name));
      n++;
    }
  }
  return n;
}

function store(entry, js) {
  try {
    if (!dirReady) {
      mkdirSync(CACHE_DIR, { recursive: true });
      dirReady = true;
    }
    const tmp = `${entry}.${process.pid}.tmp`;
    writeFileSync(tmp, js);
    renameSync(tmp, entry);
  } catch {
    // Read-only or full: the process still runs, it just strips again next time.
  }
}

/** stripTypeScriptTypes warns that it is experimental; that must not reach a CNI runtime's logs. */
function quietStrip(source) {
  const emit = process.emitWarning;
  process.emitWarning = (warning, ...rest) => {
    const type = typeof rest[0] === 'string' ? rest[0] : rest[0]?.type;
    if (type === 'ExperimentalWarning' && String(warning).includes('stripTypeScriptTypes')) return;
    emit.call(process, warning, ...rest);
  };
  try {
    return stripTypeScriptTypes(source, { mode: 'strip' });
  } finally {
    process.emitWarning = emit;
  }
}
