/**
 * The control plane's processes: each in its own process group with its output in a log file, and
 * its pid recorded in `<dir>/pids.json` as soon as it starts, so a later start or `stop` removes
 * what a crashed run left behind (a pid counts only while its command line still names the dir).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AmbitError } from '../../shared/errors.ts';
import { killMentioning } from '../teardown.ts';

export interface RecordedPid { name: string; pid: number }

export function pidFile(dir: string): string { return join(dir, 'pids.json'); }

export function readPids(dir: string): RecordedPid[] {
  try { return JSON.parse(readFileSync(pidFile(dir), 'utf8')) as RecordedPid[]; } catch { return []; }
}

function writePids(dir: string, pids: RecordedPid[]): void {
  const tmp = `${pidFile(dir)}.tmp`;
  writeFileSync(tmp, JSON.stringify(pids, null, 2) + '\n');
  renameSync(tmp, pidFile(dir));
}

/** Whether `pid` is alive and its command line mentions `dir` (not a reused pid). */
export function ownedBy(pid: number, dir: string): boolean {
  try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir); } catch { return false; }
}

export class ControlPlaneProcess {
  readonly name: string;
  readonly logFile: string;
  readonly child: ChildProcess;
  exit: { code: number | null; signal: string | null } | undefined;
  readonly exited: Promise<void>;

  constructor(dir: string, name: string, command: string, args: string[]) {
    this.name = name;
    this.logFile = join(dir, 'logs', `${name}.log`);
    const fd = openSync(this.logFile, 'a');
    try {
      this.child = spawn(command, args, { stdio: ['ignore', fd, fd], detached: true, env: { ...process.env, KUBECONFIG: '' } });
    } finally {
      closeSync(fd);
    }
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => { this.exit = { code, signal }; resolve(); });
      this.child.on('error', (err) => { this.exit = { code: null, signal: err.message }; resolve(); });
    });
    if (this.child.pid !== undefined) writePids(dir, [...readPids(dir), { name, pid: this.child.pid }]);
  }

  /** The last lines of the log, for error messages. */
  tail(lines = 15): string {
    try { return readFileSync(this.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n'); } catch { return '(no log)'; }
  }

  failure(): AmbitError {
    return new AmbitError('KUBE_PROCESS_EXITED', `${this.name} exited (code ${this.exit?.code}, signal ${this.exit?.signal}) while the control plane started; its log is ${this.logFile}, last lines:\n${this.tail()}`);
  }

  /** SIGTERM the process group, SIGKILL after graceMs. */
  async stop(graceMs: number): Promise<void> {
    const pid = this.child.pid;
    if (pid === undefined || this.exit) return;
    const signal = (s: NodeJS.Signals) => { try { process.kill(-pid, s); } catch { /* gone */ } };
    signal('SIGTERM');
    const t = setTimeout(() => signal('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(t);
  }
}

/** Kills every recorded process of `dir` still running, then anything else naming it; clears the record. */
export async function killRecorded(dir: string): Promise<void> {
  const killed: number[] = [];
  for (const p of readPids(dir)) {
    if (ownedBy(p.pid, dir)) {
      killed.push(p.pid);
      try { process.kill(-p.pid, 'SIGKILL'); } catch { try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ } }
    }
  }
  await killMentioning(dir + '/');
  // SIGKILL is delivered asynchronously: return once they are really gone (or zombies awaiting a reaper).
  const deadline = Date.now() + 10_000;
  while (killed.some(running) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  writePids(dir, []);
}

/** Alive and not a zombie. */
function running(pid: number): boolean {
  try { return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')); } catch { return false; }
}
