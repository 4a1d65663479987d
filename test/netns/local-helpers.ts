/** Shared by the local-*.test.ts files: run `ambit local` for one instance; sweep leftovers of interrupted runs. */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';

export const ROOT = resolve(import.meta.dirname, '..', '..');
export const AMBIT = join(ROOT, 'bin', 'ambit');
export const HTTP_GET = join(ROOT, 'src', 'local', 'apps', 'http-get.ts');

export function newInstance(): string {
  return `ambt-${randomBytes(3).toString('hex').slice(0, 5)}`;
}

/** Which test process started an instance (`<state>/test-owner`): its death makes the instance a leftover. */
const OWNER_FILE = 'test-owner';

export function ambitLocal(instance: string, args: string[], input?: string): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(AMBIT, ['local', ...args], { env: { ...process.env, AMBIT_LOCAL_INSTANCE: instance }, input, encoding: 'utf8', timeout: 180_000 });
  if (args[0] === 'up' && r.status === 0) {
    try { writeFileSync(join('/run/ambit', instance, OWNER_FILE), `${process.pid}\n`); } catch { /* no state dir: nothing to sweep later */ }
  }
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** Running (a zombie waiting for its reaper counts as gone). */
export function alive(pid: number): boolean {
  try { return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')); } catch { return false; }
}

/**
 * `down` for test instances (ambt-*) that an interrupted run left behind: the supervisor is gone, or
 * the test process that started it is (a killed test leaves a healthy supervisor running).
 */
export function sweepLeftovers(): void {
  let names: string[] = [];
  try { names = readdirSync('/run/ambit').filter((n) => n.startsWith('ambt-')); } catch { return; }
  for (const name of names) {
    const file = join('/run/ambit', name, 'instance.json');
    try {
      const owner = Number(readFileSync(join('/run/ambit', name, OWNER_FILE), 'utf8'));
      if (owner > 0 && owner !== process.pid && !alive(owner)) {
        ambitLocal(name, ['down']);
        continue;
      }
    } catch { /* started by hand or an older run: judged by its supervisor below */ }
    try {
      const info = JSON.parse(readFileSync(file, 'utf8')) as { pid: number };
      const young = Date.now() - statSync(file).mtimeMs < 180_000;
      if (info.pid > 0 ? alive(info.pid) : young) continue;
    } catch { /* no instance file: a leftover */ }
    ambitLocal(name, ['down']);
  }
}
