/**
 * One container process: its command run inside the pod netns (`ip netns exec`), stdout/stderr
 * appended to its log file, restarted with exponential backoff (restartPolicy Always).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { logger } from '../shared/log.ts';

const log = logger('local.process');
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30_000;
/** A run this long resets the backoff. */
const STABLE_MS = 10_000;

export interface ProcessSpec {
  /** For logs: ns/pod/container. */
  label: string;
  netns?: string;
  command: string[];
  env: NodeJS.ProcessEnv;
  logFile: string;
  restart: 'Always' | 'OnFailure' | 'Never';
}

export class SupervisedProcess {
  readonly spec: ProcessSpec;
  restarts = 0;
  lastExit: { code: number | null; signal: string | null; at: number } | undefined;
  #child: ChildProcess | undefined;
  #startedAt = 0;
  #backoff = BACKOFF_MIN_MS;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #exitWaiters: (() => void)[] = [];

  constructor(spec: ProcessSpec) {
    this.spec = spec;
  }

  get pid(): number | undefined { return this.#child?.pid; }
  get running(): boolean { return this.#child !== undefined; }
  get startedAt(): number { return this.#startedAt; }

  start(): void {
    if (this.#stopped || this.#child) return;
    const fd = openSync(this.spec.logFile, 'a');
    const [cmd, ...args] = this.spec.netns ? ['ip', 'netns', 'exec', this.spec.netns, ...this.spec.command] : this.spec.command;
    let child: ChildProcess;
    try {
      // Own process group: stop() signals the whole group (shell wrappers and their children).
      child = spawn(cmd, args, { env: this.spec.env, stdio: ['ignore', fd, fd], detached: true });
    } finally {
      closeSync(fd);
    }
    this.#child = child;
    this.#startedAt = Date.now();
    child.on('error', (err) => log.warn('cannot start process', { process: this.spec.label, error: err.message }));
    child.on('exit', (code, signal) => {
      this.#child = undefined;
      this.lastExit = { code, signal, at: Date.now() };
      for (const w of this.#exitWaiters.splice(0)) w();
      if (this.#stopped) return;
      const ranFor = Date.now() - this.#startedAt;
      if (ranFor > STABLE_MS) this.#backoff = BACKOFF_MIN_MS;
      const again = this.spec.restart === 'Always' || (this.spec.restart === 'OnFailure' && code !== 0);
      log.info('process exited', { process: this.spec.label, code, signal, restartInMs: again ? this.#backoff : undefined });
      if (!again) return;
      this.#timer = setTimeout(() => { this.restarts++; this.start(); }, this.#backoff);
      this.#backoff = Math.min(this.#backoff * 2, BACKOFF_MAX_MS);
    });
  }

  /** SIGTERM the process group, SIGKILL after `graceMs`. No restart afterwards. */
  async stop(graceMs = 3000): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    const child = this.#child;
    if (!child || child.pid === undefined) return;
    const exited = new Promise<void>((r) => this.#exitWaiters.push(r));
    const signal = (s: NodeJS.Signals) => { try { process.kill(-child.pid!, s); } catch { try { child.kill(s); } catch { /* gone */ } } };
    signal('SIGTERM');
    const t = setTimeout(() => signal('SIGKILL'), graceMs);
    await exited;
    clearTimeout(t);
  }
}
