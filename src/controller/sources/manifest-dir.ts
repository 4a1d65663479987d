/**
 * ConfigSource over a directory of manifests (YAML/JSON, any depth), such as the local mesh's object
 * store. A watch on every directory (each scan adds new ones) triggers a debounced rescan; a periodic
 * rescan is the safety net for events inotify can miss. Not fs.watch's recursive mode: on Linux it
 * loses track of a file replaced by rename (how the object store writes) and then misses its
 * deletion. A snapshot is emitted only when the objects or errors actually changed. A file that
 * stops parsing keeps the objects of its last good version (a typo must not drop a policy) until it
 * parses again or is deleted.
 */
import { watch, type FSWatcher } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { readManifestFiles } from '../../api/manifests.ts';
import type { KubeObject } from '../../api/k8s.ts';
import { AmbitError, errorMessage } from '../../shared/errors.ts';
import { logger } from '../../shared/log.ts';
import type { ClusterSnapshot, ConfigSource, SourceError } from './source.ts';

const log = logger('controller.source');

export interface ManifestDirSourceOptions {
  /** Quiet time after a file event before rescanning. */
  debounceMs?: number;
  /** Full rescan interval, in case a watch event was missed. */
  rescanMs?: number;
}

export class ManifestDirSource implements ConfigSource {
  readonly kind = 'manifests';
  readonly dir: string;
  #debounceMs: number;
  #rescanMs: number;
  /** directory -> its (non-recursive) watch, and the inode watched (a directory may be re-created) */
  #watchers = new Map<string, { w: FSWatcher; ino: number }>();
  #debounce: NodeJS.Timeout | undefined;
  #interval: NodeJS.Timeout | undefined;
  #onSnapshot: ((s: ClusterSnapshot) => void) | undefined;
  #last = '';
  #revision = 0;
  #scanning: Promise<void> | undefined;
  #again = false;
  #stopped = false;
  /** `source\0message` of the errors already logged (forgotten once fixed, so a relapse is logged again). */
  #reported = new Set<string>();
  /** file -> the objects of its last version that parsed without errors */
  #lastGood = new Map<string, KubeObject[]>();

  constructor(dir: string, opts: ManifestDirSourceOptions = {}) {
    this.dir = dir;
    this.#debounceMs = opts.debounceMs ?? 30;
    this.#rescanMs = opts.rescanMs ?? 2000;
  }

  async start(onSnapshot: (s: ClusterSnapshot) => void): Promise<void> {
    let info;
    try {
      info = await stat(this.dir);
    } catch (err) {
      throw new AmbitError('CONTROLLER_BAD_MANIFESTS', `cannot read manifest directory ${this.dir}: ${errorMessage(err)}; create it or pass another --manifests`);
    }
    if (!info.isDirectory()) {
      throw new AmbitError('CONTROLLER_BAD_MANIFESTS', `--manifests ${this.dir} is not a directory`);
    }
    this.#onSnapshot = onSnapshot;
    this.#stopped = false;
    await this.rescan();
    this.#interval = setInterval(() => void this.rescan(), this.#rescanMs);
    this.#interval.unref();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const { w } of this.#watchers.values()) w.close();
    this.#watchers.clear();
    clearTimeout(this.#debounce);
    clearInterval(this.#interval);
    await this.#scanning;
  }

  /** Read the directory now; emits a snapshot if anything changed. Scans never overlap. */
  rescan(): Promise<void> {
    if (this.#scanning) {
      this.#again = true;
      return this.#scanning;
    }
    this.#scanning = (async () => {
      try {
        do {
          this.#again = false;
          await this.#scanOnce();
        } while (this.#again && !this.#stopped);
      } finally {
        this.#scanning = undefined;
      }
    })();
    return this.#scanning;
  }

  /** Watch every directory under the root that is not watched yet; forget the ones gone. */
  async #syncWatches(): Promise<void> {
    let dirs: string[];
    try {
      const entries = await readdir(this.dir, { withFileTypes: true, recursive: true });
      dirs = [this.dir, ...entries.filter((e) => e.isDirectory()).map((e) => join(e.parentPath, e.name))];
    } catch {
      return; // the scan reports an unreadable directory
    }
    const inodes = new Map<string, number>();
    await Promise.all(dirs.map(async (d) => { try { inodes.set(d, (await stat(d)).ino); } catch { /* gone */ } }));
    for (const [d, cur] of this.#watchers) {
      if (inodes.get(d) !== cur.ino) {
        cur.w.close();
        this.#watchers.delete(d);
      }
    }
    for (const [d, ino] of inodes) {
      if (this.#watchers.has(d) || this.#stopped) continue;
      try {
        const w = watch(d, { persistent: false }, () => this.#schedule());
        w.on('error', (err) => {
          // The periodic rescan keeps us correct and re-arms the watch.
          log.debug('manifest watch failed, relying on periodic rescan', { dir: d, error: errorMessage(err) });
          w.close();
          if (this.#watchers.get(d)?.w === w) this.#watchers.delete(d);
        });
        this.#watchers.set(d, { w, ino });
      } catch (err) {
        if (d === this.dir) log.warn('cannot watch manifest directory, relying on periodic rescan', { dir: d, error: errorMessage(err) });
      }
    }
  }

  #schedule(): void {
    if (this.#stopped) return;
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => void this.rescan(), this.#debounceMs);
  }

  async #scanOnce(): Promise<void> {
    if (this.#stopped) return;
    // Watches first: a change after this point triggers another scan, one before it is read now.
    await this.#syncWatches();
    if (this.#stopped) return;
    let files;
    try {
      files = await readManifestFiles(this.dir);
    } catch (err) {
      // The whole directory is unreadable (removed?): keep the last snapshot, say so once.
      this.#report([{ source: this.dir, message: `cannot read: ${errorMessage(err)}` }]);
      return;
    }
    const parsed: { objects: KubeObject[]; errors: SourceError[] } = { objects: [], errors: [] };
    const present = new Set<string>();
    for (const f of files) {
      // A file deleted between listing and reading is simply gone, not an error (no spurious snapshot).
      if (f.errors.some((e) => e.message.startsWith('cannot read: ENOENT'))) continue;
      present.add(f.file);
      parsed.objects.push(...f.objects);
      if (f.errors.length === 0) {
        this.#lastGood.set(f.file, f.objects);
        continue;
      }
      const kept = this.#keptFromLastGood(f.file, f.objects);
      parsed.objects.push(...kept);
      parsed.errors.push(...f.errors.map((e) => kept.length === 0 ? e : { ...e, message: `${e.message} (keeping ${kept.length} object(s) from this file's last good version)` }));
    }
    for (const file of this.#lastGood.keys()) if (!present.has(file)) this.#lastGood.delete(file);
    this.#report(parsed.errors);
    const key = JSON.stringify(parsed);
    if (key === this.#last || this.#stopped) return;
    this.#last = key;
    this.#revision++;
    this.#onSnapshot?.({ objects: parsed.objects, errors: parsed.errors, revision: this.#revision });
  }

  /** Objects of the file's last good version that its current (broken) version no longer yields. */
  #keptFromLastGood(file: string, now: KubeObject[]): KubeObject[] {
    const id = (o: KubeObject) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
    const have = new Set(now.map(id));
    return (this.#lastGood.get(file) ?? []).filter((o) => !have.has(id(o)));
  }

  #report(errors: SourceError[]): void {
    const now = new Set<string>();
    for (const e of errors) {
      const k = `${e.source}\0${e.message}`;
      now.add(k);
      if (!this.#reported.has(k)) log.warn('bad manifest skipped', { source: e.source, error: e.message });
    }
    this.#reported = now;
  }
}
