/**
 * A pod sandbox: the pod's netns, wired by CNI (loopback, then the node's conflist for eth0) run in
 * the node's netns. A record of every sandbox is written to the state dir BEFORE the ADD (with the
 * result after), so a DEL can always be issued later, even by `ambit local down` after a crash.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { AmbitError, errorMessage } from '../shared/errors.ts';
import { logger } from '../shared/log.ts';
import { cniAdd, cniDel, loopbackConflist, type CniConflist, type CniInvocation, type CniResult } from './cni-exec.ts';
import type { Ledger } from './ledger.ts';
import { deleteNetns, netnsExists } from './network.ts';
import { must } from './sh.ts';

const log = logger('local.sandbox');

export interface SandboxRecord {
  uid: string;
  namespace: string;
  name: string;
  node: string;
  nodeNetns: string;
  netns: string;
  containerId: string;
  binDirs: string[];
  conflist: CniConflist;
  loopback?: CniResult;
  result?: CniResult;
}

function recordFile(dir: string, uid: string): string { return join(dir, `${uid}.json`); }

function saveRecord(dir: string, r: SandboxRecord): void {
  mkdirSync(dir, { recursive: true });
  const f = recordFile(dir, r.uid);
  writeFileSync(`${f}.tmp`, JSON.stringify(r, null, 2) + '\n');
  renameSync(`${f}.tmp`, f);
}

export function listRecords(dir: string): SandboxRecord[] {
  let files: string[] = [];
  try { files = readdirSync(dir).filter((f) => f.endsWith('.json')); } catch { return []; }
  const out: SandboxRecord[] = [];
  for (const f of files) {
    try { out.push(JSON.parse(readFileSync(join(dir, f), 'utf8')) as SandboxRecord); } catch { /* torn write: skip */ }
  }
  return out;
}

function invocation(r: SandboxRecord, ifName: string): CniInvocation {
  return {
    containerId: r.containerId,
    netnsPath: `/run/netns/${r.netns}`,
    ifName,
    args: { K8S_POD_NAMESPACE: r.namespace, K8S_POD_NAME: r.name, K8S_POD_INFRA_CONTAINER_ID: r.containerId, K8S_POD_UID: r.uid },
    binDirs: r.binDirs,
    execNetns: r.nodeNetns,
  };
}

export interface SandboxRequest {
  uid: string; namespace: string; name: string;
  node: string; nodeNetns: string; netns: string;
  conflist: CniConflist; binDirs: string[];
  recordsDir: string; ledger: Ledger;
}

/** Create the netns and run CNI ADD. Throws LOCAL_CNI_FAILED (with the plugin's message) after undoing. */
export async function createSandbox(req: SandboxRequest): Promise<SandboxRecord> {
  const rec: SandboxRecord = {
    uid: req.uid, namespace: req.namespace, name: req.name, node: req.node, nodeNetns: req.nodeNetns,
    netns: req.netns, containerId: randomBytes(32).toString('hex'), binDirs: req.binDirs, conflist: req.conflist,
  };
  if (netnsExists(rec.netns)) await deleteNetns(rec.netns);
  req.ledger.addNetns(rec.netns);
  saveRecord(req.recordsDir, rec);
  try {
    await must('ip', ['netns', 'add', rec.netns]);
    const lo = loopbackConflist();
    rec.loopback = await cniAdd(lo, invocation(rec, 'lo'));
    saveRecord(req.recordsDir, rec);
    rec.result = await cniAdd(rec.conflist, invocation(rec, 'eth0'));
    saveRecord(req.recordsDir, rec);
    return rec;
  } catch (err) {
    await destroySandbox(rec, req.recordsDir, req.ledger).catch(() => undefined);
    if (err instanceof AmbitError) throw err;
    throw new AmbitError('LOCAL_SANDBOX', `cannot create the network of pod ${req.namespace}/${req.name}: ${errorMessage(err)}`);
  }
}

/** CNI DEL (eth0 list in reverse, then loopback), remove the netns and the record. Best effort, idempotent. */
export async function destroySandbox(rec: SandboxRecord, recordsDir: string, ledger?: Ledger): Promise<void> {
  if (netnsExists(rec.nodeNetns)) {
    try {
      await cniDel(rec.conflist, invocation(rec, 'eth0'), rec.result);
    } catch (err) {
      log.warn('CNI DEL failed', { pod: `${rec.namespace}/${rec.name}`, error: errorMessage(err) });
    }
    await cniDel(loopbackConflist(), invocation(rec, 'lo'), rec.loopback).catch(() => undefined);
  }
  await deleteNetns(rec.netns);
  ledger?.removeNetns(rec.netns);
  rmSync(recordFile(recordsDir, rec.uid), { force: true });
}

export function podIPOf(rec: SandboxRecord): string | undefined {
  const a = rec.result?.ips?.[0]?.address;
  return a?.split('/')[0];
}
