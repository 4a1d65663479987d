/** Helpers for tests against the real control plane: kubectl, polling, leftover sweeping. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stopKubeControlPlane, type KubeControlPlane } from '../../src/local/kube/control-plane.ts';

export const TEST_DIR_PREFIX = 'ambit-kube-test-';

/** A fresh test dir, with the pid of the test process that owns it (see sweepLeftovers). */
export function newTestDir(): string {
  const dir = mkdtempSync(join(tmpdir(), TEST_DIR_PREFIX));
  writeFileSync(join(dir, 'owner'), `${process.pid}\n`);
  return dir;
}

/** Whether a test dir belongs to a test process that is still running (other test files may run at once). */
function ownerAlive(dir: string): boolean {
  let pid: number;
  try { pid = Number(readFileSync(join(dir, 'owner'), 'utf8').trim()); } catch {
    // No owner file: a dir made by other code; leave it alone for an hour.
    try { return Date.now() - statSync(dir).mtimeMs < 3_600_000; } catch { return false; }
  }
  try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('node'); } catch { return false; }
}

/** Stops and removes what interrupted earlier runs left in their test dirs (not those of running tests). */
export async function sweepLeftovers(): Promise<void> {
  for (const e of readdirSync(tmpdir())) {
    if (!e.startsWith(TEST_DIR_PREFIX)) continue;
    const dir = join(tmpdir(), e);
    if (ownerAlive(dir)) continue;
    await stopKubeControlPlane(dir);
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface Run { code: number | null; stdout: string; stderr: string }

export function kubectl(cp: Pick<KubeControlPlane, 'kubeconfig' | 'kubectlDir'>, args: string[], input?: string): Run {
  const r = spawnSync(join(cp.kubectlDir, 'kubectl'), args, {
    encoding: 'utf8', input, timeout: 60_000, env: { ...process.env, KUBECONFIG: cp.kubeconfig },
  });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? r.error?.message ?? '' };
}

/** Like kubectl, but fails the test with kubectl's stderr when it exits non-zero. */
export function kubectlOk(cp: Pick<KubeControlPlane, 'kubeconfig' | 'kubectlDir'>, args: string[], input?: string): string {
  const r = kubectl(cp, args, input);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** Polls `fn` until it returns a value that is not undefined; throws after timeoutMs with `what`. */
export async function eventually<T>(what: string, fn: () => T | undefined, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
