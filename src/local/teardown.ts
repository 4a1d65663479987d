/**
 * Removing an instance from what its state dir records: CNI DEL for every pod sandbox, every process
 * whose command line names the state dir, every netns/link/iptables chain in the ledger, then the
 * state dir itself. Works with or without a live supervisor; safe to run twice.
 */
import { readdirSync, readFileSync, rmSync, rmdirSync } from 'node:fs';
import { errorMessage } from '../shared/errors.ts';
import { logger } from '../shared/log.ts';
import { STATE_ROOT, type Paths } from './instance.ts';
import { Ledger } from './ledger.ts';
import { destroyNetwork } from './network.ts';
import { destroySandbox, listRecords } from './sandbox.ts';

const log = logger('local.teardown');

/** PIDs (other than ours) whose command line contains `text`. */
export function pidsMentioning(text: string): number[] {
  const out: number[] = [];
  let entries: string[] = [];
  try { entries = readdirSync('/proc'); } catch { return out; }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid || pid === process.ppid) continue;
    try {
      if (readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0').some((a) => a.includes(text))) out.push(pid);
    } catch { /* gone */ }
  }
  return out;
}

export async function killMentioning(text: string): Promise<void> {
  for (let i = 0; i < 30; i++) {
    const pids = pidsMentioning(text);
    if (pids.length === 0) return;
    for (const p of pids) { try { process.kill(p, i < 10 ? 'SIGTERM' : 'SIGKILL'); } catch { /* gone */ } }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Returns the problems left (empty when everything is gone). */
export async function teardownInstance(paths: Paths, o: { removeStateDir?: boolean } = {}): Promise<string[]> {
  const data = Ledger.read(paths.ledger);
  for (const rec of listRecords(paths.podRecords)) {
    await destroySandbox(rec, paths.podRecords).catch((err) => log.warn('pod clean-up failed', { pod: `${rec.namespace}/${rec.name}`, error: errorMessage(err) }));
  }
  // The ledger's pids, then anything else started with our state dir in its arguments (agents, controller).
  for (const p of data.pids) {
    try {
      if (readFileSync(`/proc/${p.pid}/cmdline`, 'utf8').includes(p.match)) process.kill(p.pid, 'SIGTERM');
    } catch { /* gone */ }
  }
  await killMentioning(paths.root + '/');
  const problems = await destroyNetwork(data);
  if (o.removeStateDir !== false) {
    rmSync(paths.root, { recursive: true, force: true });
    try { rmdirSync(STATE_ROOT); } catch { /* other instances, or gone */ }
  }
  return problems;
}
