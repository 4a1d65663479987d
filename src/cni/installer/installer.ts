/**
 * The CNI installer: puts `ambit-cni` into the node's CNI bin dir, chains it into the primary CNI
 * config, keeps it chained while another CNI rewrites its config (watch), and takes it all out again
 * (uninstall). The installer DaemonSet runs `ambit cni-install`, which is this in a loop.
 */
import { existsSync, statSync, watch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { AmbitError, errorMessage, isAmbitError } from '../../shared/errors.ts';
import { logger } from '../../shared/log.ts';
import { chain, unchain } from './chain.ts';
import type { Rewrite } from './chain.ts';
import { applyRewrite, confFiles, readConf, readPrimary } from './conf-dir.ts';
import { installPlugin, pluginContent, pluginPath, removePlugin } from './plugin-binary.ts';
import type { PluginSource } from './plugin-binary.ts';
import { PLUGIN_KUBECONFIG_NAME, removePluginKubeconfig, writePluginKubeconfig, type PluginKubeconfig } from './plugin-kubeconfig.ts';

const log = logger('cni-install');

export interface CniInstallerOptions {
  /** CNI config dir, default /etc/cni/net.d. */
  confDir: string;
  /** CNI bin dir, default /opt/cni/bin. */
  binDir: string;
  plugin: PluginSource;
  /** Our entry's keys besides `type` (what src/cni/config.ts reads: agentSocket, logFile, objectStore). */
  settings: Record<string, unknown>;
  /** On a cluster: the kubeconfig the plugin reads pod labels with (its path goes into our entry). */
  kubeconfig?: PluginKubeconfig;
}

export interface InstallOutcome { pluginWritten: boolean; kubeconfigWritten: boolean; file: string; action: Rewrite['action'] }
export interface UninstallOutcome { files: { file: string; action: Rewrite['action'] }[]; pluginRemoved: boolean; kubeconfigRemoved: boolean; errors: string[] }

export class CniInstaller {
  #o: CniInstallerOptions;
  #content: Buffer | undefined;
  /** Identity of the plugin file we last wrote or checked: skip re-reading it on every pass. */
  #pluginStamp = '';

  constructor(o: CniInstallerOptions) {
    this.#o = o;
  }

  get options(): CniInstallerOptions { return this.#o; }

  /** The entry we chain: `{type: ambit-cni, ...settings}`. */
  entry(): Record<string, unknown> {
    if (typeof this.#o.settings.agentSocket !== 'string' || this.#o.settings.agentSocket === '') {
      throw new AmbitError('CNI_INSTALL_BAD_SETTINGS', 'agentSocket must be set: ambit-cni hands pods to the node agent over that unix socket');
    }
    if (this.#o.kubeconfig && this.#o.settings.objectStore !== undefined) {
      throw new AmbitError('CNI_INSTALL_BAD_SETTINGS', 'objectStore and a plugin kubeconfig are both set; on a cluster ambit-cni reads pods from the API server');
    }
    return { type: 'ambit-cni', ...this.#o.settings, ...(this.#o.kubeconfig ? { kubeconfig: this.#o.kubeconfig.hostFile } : {}) };
  }

  /**
   * One pass: plugin in place, our entry in the primary config. Throws CNI_INSTALL_NO_CONFIG when
   * the directory has no config yet, CNI_INSTALL_BAD_CONFIG naming the file when it is unusable.
   */
  installOnce(): InstallOutcome {
    const pluginWritten = this.#ensurePlugin();
    // Before the entry that names it: a pod started right after must find it.
    const kubeconfigWritten = this.#o.kubeconfig ? writePluginKubeconfig(this.#o.kubeconfig) : false;
    const primary = readPrimary(this.#o.confDir);
    if (!primary) {
      throw new AmbitError('CNI_INSTALL_NO_CONFIG', `no CNI config (*.conf, *.conflist, *.json) in ${this.#o.confDir} yet; waiting for the node's primary CNI (bridge, Calico, Cilium, ...) to write one`);
    }
    const r = chain(primary, this.entry());
    applyRewrite(this.#o.confDir, primary, r);
    return { pluginWritten, kubeconfigWritten, file: r.write?.file ?? primary.file, action: r.action };
  }

  #ensurePlugin(): boolean {
    const path = pluginPath(this.#o.binDir);
    const stamp = statStamp(path);
    if (stamp !== '' && stamp === this.#pluginStamp) return false;
    this.#content ??= pluginContent(this.#o.plugin);
    const written = installPlugin(this.#o.binDir, this.#content);
    this.#pluginStamp = statStamp(path);
    return written;
  }

  /**
   * Our entry out of every config in the directory (not only the primary: it may have changed since
   * we chained), converted files back to .conf, the plugin removed. Unreadable files are reported,
   * not fatal: they are not ours to fix, and the rest still has to be cleaned.
   */
  uninstall(): UninstallOutcome {
    const out: UninstallOutcome = { files: [], pluginRemoved: false, kubeconfigRemoved: false, errors: [] };
    for (const file of confFiles(this.#o.confDir)) {
      try {
        const conf = readConf(this.#o.confDir, file);
        let r = unchain(conf);
        if (r.action === 'absent') continue;
        // A converted .conf that the primary CNI has meanwhile written again is newer than ours.
        if (r.write && r.write.file !== file && existsSync(join(this.#o.confDir, r.write.file))) {
          r = { write: undefined, remove: file, action: 'removed' };
        }
        applyRewrite(this.#o.confDir, conf, r);
        out.files.push({ file, action: r.action });
      } catch (err) {
        out.errors.push(errorMessage(err));
      }
    }
    out.pluginRemoved = removePlugin(this.#o.binDir);
    // Also when this run was not told about it (a plain `ambit cni-uninstall`): it holds a token.
    out.kubeconfigRemoved = removePluginKubeconfig(this.#o.kubeconfig?.file ?? join(this.#o.confDir, PLUGIN_KUBECONFIG_NAME));
    this.#pluginStamp = '';
    return out;
  }

  /** Keep installed until stop(): re-checks on every change in the conf dir, and every pollMs. */
  watch(o: WatchOptions = {}): ConfWatcher {
    return new ConfWatcher(this, o);
  }
}

function statStamp(path: string): string {
  try {
    const st = statSync(path);
    return `${st.ino}:${st.size}:${st.mtimeMs}:${st.mode}`;
  } catch {
    return '';
  }
}

export type WatchEvent =
  | { kind: 'installed'; outcome: InstallOutcome }
  | { kind: 'waiting'; code: string; message: string };

export interface WatchOptions {
  /** Safety net for file systems where inotify misses changes (and for the bin dir). Default 5000. */
  pollMs?: number;
  /** Every pass's result, changed or not. */
  onEvent?: (e: WatchEvent) => void;
}

/**
 * The watch loop. Our own writes wake it too; those passes find nothing to do. Passes never
 * overlap; stop() waits for the one running.
 */
export class ConfWatcher {
  #installer: CniInstaller;
  #o: WatchOptions;
  #fsw: FSWatcher | undefined;
  #watchedIno = '';
  #poll: NodeJS.Timeout;
  #debounce: NodeJS.Timeout | undefined;
  #running: Promise<void> = Promise.resolve();
  #again = false;
  #busy = false;
  #stopped = false;
  #lastProblem = '';

  constructor(installer: CniInstaller, o: WatchOptions) {
    this.#installer = installer;
    this.#o = o;
    this.#poll = setInterval(() => this.#kick(), o.pollMs ?? 5000);
    this.#watchDir();
    this.#kick(0);
  }

  /**
   * (Re)arm inotify on the conf dir. It may not exist yet (polling covers until it does), or have
   * been replaced by a new directory (the old watch sees nothing any more).
   */
  #watchDir(): void {
    if (this.#stopped) return;
    const ino = statStamp(this.#installer.options.confDir).split(':')[0] ?? '';
    if (this.#fsw && ino === this.#watchedIno) return;
    this.#fsw?.close();
    this.#fsw = undefined;
    if (ino === '') return;
    try {
      this.#fsw = watch(this.#installer.options.confDir, { persistent: true }, () => this.#kick());
      this.#fsw.on('error', () => { this.#fsw?.close(); this.#fsw = undefined; });
      this.#watchedIno = ino;
    } catch {
      this.#fsw = undefined;
    }
  }

  /** Coalesces bursts of events (a CNI writing several files) into one pass. */
  #kick(delayMs = 50): void {
    if (this.#stopped) return;
    if (this.#debounce) return;
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined;
      this.#run();
    }, delayMs);
  }

  #run(): void {
    if (this.#busy) { this.#again = true; return; }
    this.#busy = true;
    this.#running = (async () => {
      do {
        this.#again = false;
        if (this.#stopped) break;
        this.#watchDir();
        this.#pass();
        await new Promise((r) => setImmediate(r));
      } while (this.#again);
      this.#busy = false;
    })();
  }

  #pass(): void {
    try {
      const outcome = this.#installer.installOnce();
      if (outcome.pluginWritten) log.info('installed the ambit-cni plugin', { path: pluginPath(this.#installer.options.binDir) });
      if (outcome.kubeconfigWritten) log.info('wrote the ambit-cni kubeconfig', { path: this.#installer.options.kubeconfig?.file });
      if (outcome.action !== 'unchanged') {
        log.info('chained ambit-cni into the primary CNI config', { file: join(this.#installer.options.confDir, outcome.file), action: outcome.action });
      }
      if (this.#lastProblem) log.info('CNI config usable again', { file: outcome.file });
      this.#lastProblem = '';
      this.#o.onEvent?.({ kind: 'installed', outcome });
    } catch (err) {
      const code = isAmbitError(err) ? err.code : 'CNI_INSTALL_FAILED';
      const message = errorMessage(err);
      // Once per distinct problem, not every poll.
      if (message !== this.#lastProblem) {
        if (code === 'CNI_INSTALL_NO_CONFIG') log.warn(message, { code });
        else log.error(message, { code });
      }
      this.#lastProblem = message;
      this.#o.onEvent?.({ kind: 'waiting', code, message });
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#poll);
    if (this.#debounce) clearTimeout(this.#debounce);
    this.#debounce = undefined;
    this.#fsw?.close();
    this.#fsw = undefined;
    await this.#running;
  }
}
