/**
 * The CNI configuration directory (/etc/cni/net.d) as container runtimes see it: the primary
 * network is the lexically first *.conf / *.conflist / *.json file (libcni's ConfFiles order, which
 * containerd, CRI-O and the kubelet use). Files are replaced atomically (temp file in the same
 * directory + rename) so a runtime never reads half a file, keeping their mode and owner.
 */
import { closeSync, constants, fsyncSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeSync, fchownSync, fchmodSync } from 'node:fs';
import { extname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { AmbitError } from '../../shared/errors.ts';
import { CONF_EXTENSIONS, ORIGINAL_KEY, parseConf } from './chain.ts';
import type { ParsedConf, Rewrite } from './chain.ts';

/** Config files in runtime order; temp files (ours and others') do not count: their extension differs. */
export function confFiles(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') return [];
    throw new AmbitError('CNI_INSTALL_IO', `cannot read the CNI config directory ${dir}: ${e.message}`);
  }
  return names
    .filter((n) => CONF_EXTENSIONS.includes(extname(n)) && isFile(join(dir, n)))
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));   // byte order, as Go's sort.Strings
}

function isFile(path: string): boolean {
  try { return statSync(path).isFile(); } catch { return false; }
}

/** The primary config, parsed; undefined when the directory has none yet (the primary CNI has not started). */
export function readPrimary(dir: string): ParsedConf | undefined {
  const first = confFiles(dir)[0];
  return first === undefined ? undefined : readConf(dir, first);
}

export function readConf(dir: string, file: string): ParsedConf {
  let text: string;
  try {
    text = readFileSync(join(dir, file), 'utf8');
  } catch (err) {
    throw new AmbitError('CNI_INSTALL_IO', `cannot read CNI config ${join(dir, file)}: ${(err as Error).message}`);
  }
  return parseConf(file, text, join(dir, file));   // errors name the full path: the operator has to find it
}

/**
 * Write `text` to `path` atomically. Mode and owner come from the file being replaced, else from
 * `like` (the .conf being converted), else 0644; `mode` forces the mode (an executable).
 */
export function writeAtomic(path: string, text: string | Buffer, o: { like?: string; mode?: number } = {}): void {
  let mode = 0o644;
  let owner: { uid: number; gid: number } | undefined;
  for (const p of [path, o.like]) {
    if (!p) continue;
    try {
      const st = statSync(p);
      mode = st.mode & 0o7777;
      owner = { uid: st.uid, gid: st.gid };
      break;
    } catch { /* not there */ }
  }
  if (o.mode !== undefined) mode = o.mode;
  const tmp = `${path}.ambit-tmp-${process.pid}-${randomBytes(3).toString('hex')}`;
  let fd: number | undefined;
  try {
    fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
    const buf = typeof text === 'string' ? Buffer.from(text) : text;
    for (let off = 0; off < buf.length;) off += writeSync(fd, buf, off);
    fchmodSync(fd, mode);   // open's mode is cut by the umask
    if (owner && process.getuid?.() === 0) fchownSync(fd, owner.uid, owner.gid);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    rmSync(tmp, { force: true });
    throw new AmbitError('CNI_INSTALL_IO', `cannot write ${path}: ${(err as Error).message}`);
  }
}

/**
 * Carry out a chain()/unchain() result. A conversion writes the .conflist first, then removes the
 * .conf: in between the .conf still sorts first, so the runtime sees the old network, never none.
 */
export function applyRewrite(dir: string, from: ParsedConf, r: Rewrite): void {
  if (r.write) {
    const target = join(dir, r.write.file);
    if (r.write.file !== from.file) refuseForeign(dir, r.write.file, from.file);
    writeAtomic(target, r.write.text, { like: join(dir, from.file) });
  }
  if (r.remove && r.remove !== r.write?.file) {
    try {
      rmSync(join(dir, r.remove), { force: true });
    } catch (err) {
      throw new AmbitError('CNI_INSTALL_IO', `cannot remove ${join(dir, r.remove)}: ${(err as Error).message}`);
    }
  }
}

/** Converting X.conf may only overwrite an X.conflist that is our own earlier conversion of it. */
function refuseForeign(dir: string, target: string, from: string): void {
  let text: string;
  try { text = readFileSync(join(dir, target), 'utf8'); } catch { return; }
  let marker: unknown;
  try { marker = (JSON.parse(text) as Record<string, unknown>)[ORIGINAL_KEY]; } catch { /* foreign */ }
  if ((marker as { file?: unknown } | undefined)?.file === from || (marker as { file?: unknown } | undefined)?.file === target) return;
  throw new AmbitError('CNI_INSTALL_CONFLICT', `cannot turn ${join(dir, from)} into ${join(dir, target)}: that file already exists and is not Ambit's; remove one of the two (the runtime only uses ${join(dir, from)})`);
}
