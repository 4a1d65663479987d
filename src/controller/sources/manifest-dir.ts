/**
 * ConfigSource over a directory of manifests (YAML/JSON, any depth), such as the local mesh's object
 * store. fs.watch (recursive) triggers a debounced rescan; a periodic rescan is the safety net for
 * events inotify can miss (e.g. a directory created and filled before it was watched). A snapshot
 * is emitted only when the objects or errors actually changed.
 */
import { watch, type FSWatcher } from 'node:fs';
import { stat } from 'node:fs/promises';
import { readManifestPath } from '../../api/manifests.ts';
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
  readonly dir: string;
  #debounceMs: number;
  #rescanMs: number;
  #watcher: FSWatcher | undefined;
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
    this.#watch();
    await this.rescan();
    this.#interval = setInterval(() => void this.rescan(), this.#rescanMs);
    this.#interval.unref();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#watcher?.close();
    this.#watcher = undefined;
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

  #watch(): void {
    try {
      this.#watcher = watch(this.dir, { recursive: true, persistent: false }, () => this.#schedule());
      this.#watcher.on('error', (err) => {
        // The periodic rescan keeps us correct; try to re-arm the watch on the next one.
        log.warn('manifest watch failed, relying on periodic rescan', { dir: this.dir, error: errorMessage(err) });
        this.#watcher?.close();
        this.#watcher = undefined;
      });
    } catch (err) {
      log.warn('cannot watch manifest directory, relying on periodic rescan', { dir: this.dir, error: errorMessage(err) });
    }
  }

  #schedule(): void {
    if (this.#stopped) return;
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => void this.rescan(), this.#debounceMs);
  }

  async #scanOnce(): Promise<void> {
    if (this.#stopped) return;
    if (!this.#watcher) this.#watch();
    let parsed;
    try {
      parsed = await readManifestPath(this.dir);
    } catch (err) {
      // The whole directory is unreadable (removed?): keep the last snapshot, say so once.
      this.#report([{ source: this.dir, message: `cannot read: ${errorMessage(err)}` }]);
      return;
    }
    // A file deleted between listing and reading is simply gone, not an error (no spurious snapshot).
    parsed.errors = parsed.errors.filter((e) => !e.message.startsWith('cannot read: ENOENT'));
    this.#report(parsed.errors);
    const key = JSON.stringify(parsed);
    if (key === this.#last || this.#stopped) return;
    this.#last = key;
    this.#revision++;
    this.#onSnapshot?.({ objects: parsed.objects, errors: parsed.errors, revision: this.#revision });
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
