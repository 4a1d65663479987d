/**
 * Names, paths and addresses of one local-mesh instance. Everything an instance creates is derived
 * from its name and its subnet index, so two instances (the default one and a test's) never clash.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { AmbitError } from '../shared/errors.ts';

export const STATE_ROOT = '/run/ambit';
/** 16 instances x up to 14 nodes share 10.244.0.0/16 for pods: instance k, node n -> 10.244.(16k+n).0/24. */
export const MAX_INSTANCES = 16;
export const MAX_NODES = 14;
export const SERVICE_CIDR = '10.96.0.0/16';

/** The package root (holds bin/, src/, node_modules/). */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const NODE_BIN = join(PACKAGE_ROOT, 'node_modules', '.bin', 'node');
export const AMBIT_BIN = join(PACKAGE_ROOT, 'bin', 'ambit');
export const CLI_MAIN = join(PACKAGE_ROOT, 'src', 'cli', 'main.ts');
/** First node flags of every Ambit process: serve .ts from the strip cache (src/boot/ts-strip-cache.mjs). */
export const NODE_PRELOAD = ['--import', pathToFileURL(join(PACKAGE_ROOT, 'src', 'boot', 'register-ts-strip-cache.mjs')).href];
export const CNI_BIN_DIR = '/usr/lib/cni';

export interface NodeInfo {
  name: string;
  index: number;
  netns: string;
  /** Host-side veth name (≤ 15 chars). */
  hostVeth: string;
  ip: string;
  podCidr: string;
  podGateway: string;
}

export interface InstanceInfo {
  name: string;
  index: number;
  nodes: number;
  mesh: boolean;
  /** Pods come from a real API server in `<state dir>/kube` (`ambit local up --kubernetes`). */
  kubernetes?: boolean;
}

const NAME_RE = /^[a-z][a-z0-9-]{0,9}$/;

export function instanceName(env: NodeJS.ProcessEnv = process.env): string {
  const name = env.AMBIT_LOCAL_INSTANCE || 'ambit';
  if (!NAME_RE.test(name)) {
    throw new AmbitError('LOCAL_BAD_INSTANCE', `AMBIT_LOCAL_INSTANCE="${name}" is not valid: use 1-10 characters, a-z, 0-9 and '-', starting with a letter (it becomes part of interface names, which are limited to 15 characters)`);
  }
  return name;
}

export function stateDirOf(name: string): string {
  return join(STATE_ROOT, name);
}

/** Paths inside one instance's state directory. */
export class Paths {
  readonly root: string;
  constructor(root: string) { this.root = root; }
  get socket(): string { return join(this.root, 'ambit.sock'); }
  get instanceFile(): string { return join(this.root, 'instance.json'); }
  get ledger(): string { return join(this.root, 'ledger.json'); }
  get objects(): string { return join(this.root, 'objects'); }
  get ca(): string { return join(this.root, 'ca'); }
  /** ambit-cni's API server credentials (--kubernetes). */
  get cni(): string { return join(this.root, 'cni'); }
  get logs(): string { return join(this.root, 'logs'); }
  get podLogs(): string { return join(this.root, 'logs', 'pods'); }
  get podRecords(): string { return join(this.root, 'pods'); }
  get supervisorLog(): string { return join(this.root, 'logs', 'supervisor.log'); }
  nodeDir(node: string): string { return join(this.root, 'nodes', node); }
  podLog(ns: string, pod: string, container: string): string { return join(this.podLogs, `${ns}_${pod}_${container}.log`); }
}

/** The bridge on the host that every node's veth is attached to: `<instance>0`. */
export function bridgeName(instance: string): string { return `${instance}0`; }
export function hostChainName(instance: string): string { return `AMBIT-FWD-${instance}`.slice(0, 28); }
export function nodeSubnet(index: number): string { return `10.250.${index}.0/24`; }
export function hostBridgeIp(index: number): string { return `10.250.${index}.254`; }

export function nodeInfo(instance: string, index: number, n: number): NodeInfo {
  const third = index * 16 + n;
  return {
    name: `node-${n}`,
    index: n,
    netns: `${instance}-node-${n}`,
    hostVeth: `${instance}n${n}`,
    ip: `10.250.${index}.${n}`,
    podCidr: `10.244.${third}.0/24`,
    podGateway: `10.244.${third}.1`,
  };
}

export function podNetnsName(instance: string, uid: string): string {
  return `${instance}-p-${createHash('sha256').update(uid).digest('hex').slice(0, 10)}`;
}

/** Subnet index for a new instance: 0 for the default one, else a free one (not used by a running instance). */
export function pickIndex(instance: string): number {
  const used = new Set<number>();
  let entries: string[] = [];
  try { entries = readdirSync(STATE_ROOT); } catch { /* none yet */ }
  for (const e of entries) {
    if (e === instance) continue;
    try {
      const info = JSON.parse(readFileSync(join(STATE_ROOT, e, 'instance.json'), 'utf8')) as InstanceInfo;
      used.add(info.index);
    } catch { /* not an instance */ }
  }
  if (instance === 'ambit' && !used.has(0)) return 0;
  const h = createHash('sha256').update(instance).digest()[0] % (MAX_INSTANCES - 1);
  for (let i = 0; i < MAX_INSTANCES - 1; i++) {
    const cand = 1 + ((h + i) % (MAX_INSTANCES - 1));
    if (!used.has(cand)) return cand;
  }
  if (!used.has(0)) return 0;
  throw new AmbitError('LOCAL_TOO_MANY', `all ${MAX_INSTANCES} local-mesh subnets are in use (see ${STATE_ROOT}); run 'ambit local down' for one of them`);
}
