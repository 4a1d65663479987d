/**
 * A small CNI conflist executor (spec 1.0.0), calling plugins exactly as a container runtime does:
 * environment CNI_COMMAND/CNI_CONTAINERID/CNI_NETNS/CNI_IFNAME/CNI_ARGS/CNI_PATH, the plugin's config
 * on stdin with `name`, `cniVersion` and the previous plugin's result as `prevResult`. The plugins run
 * inside the node's netns (where the pod bridge lives). ADD that fails is undone (DEL in reverse order).
 */
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { AmbitError } from '../shared/errors.ts';
import { runCmd } from './sh.ts';

export interface CniPluginConf { type: string; [key: string]: unknown }
export interface CniConflist { cniVersion: string; name: string; plugins: CniPluginConf[] }
export interface CniResult {
  cniVersion?: string;
  interfaces?: { name: string; mac?: string; sandbox?: string }[];
  ips?: { address: string; gateway?: string; interface?: number }[];
  routes?: { dst: string; gw?: string }[];
  dns?: unknown;
  [key: string]: unknown;
}

export interface CniInvocation {
  containerId: string;
  /** Path of the pod's netns (/run/netns/NAME). */
  netnsPath: string;
  ifName: string;
  /** CNI_ARGS pairs, e.g. K8S_POD_NAME. IgnoreUnknown=1 is always added first. */
  args: Record<string, string>;
  /** Directories searched for plugin binaries (CNI_PATH). */
  binDirs: string[];
  /** Netns the plugins are executed in (the node); undefined = the caller's. */
  execNetns?: string;
}

function findPlugin(type: string, dirs: string[]): string {
  for (const d of dirs) {
    const p = join(d, type);
    try { accessSync(p, constants.X_OK); return p; } catch { /* next */ }
  }
  throw new AmbitError('LOCAL_CNI_PLUGIN_MISSING', `CNI plugin "${type}" not found in CNI_PATH ${dirs.join(':')}; install it (Debian: containernetworking-plugins) or fix the conflist`);
}

function cniArgs(args: Record<string, string>): string {
  return [['IgnoreUnknown', '1'], ...Object.entries(args)].map(([k, v]) => `${k}=${v}`).join(';');
}

/** Run one plugin. Returns its parsed stdout (the result; empty object for DEL). */
export async function invokePlugin(command: 'ADD' | 'DEL' | 'CHECK', list: CniConflist, plugin: CniPluginConf,
  inv: CniInvocation, prevResult: CniResult | undefined): Promise<CniResult> {
  const path = findPlugin(plugin.type, inv.binDirs);
  const conf: Record<string, unknown> = { ...plugin, name: list.name, cniVersion: list.cniVersion };
  if (prevResult !== undefined) conf.prevResult = prevResult;
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: command,
    CNI_CONTAINERID: inv.containerId,
    CNI_NETNS: inv.netnsPath,
    CNI_IFNAME: inv.ifName,
    CNI_ARGS: cniArgs(inv.args),
    CNI_PATH: inv.binDirs.join(':'),
  };
  if (process.env.AMBIT_LOG_LEVEL) env.AMBIT_LOG_LEVEL = process.env.AMBIT_LOG_LEVEL;
  const [cmd, argv] = inv.execNetns ? ['ip', ['netns', 'exec', inv.execNetns, path]] : [path, []];
  const r = await runCmd(cmd, argv as string[], { env, input: JSON.stringify(conf), timeoutMs: 60_000 });
  let out: Record<string, unknown> = {};
  if (r.stdout.trim()) {
    try { out = JSON.parse(r.stdout) as Record<string, unknown>; } catch { /* not JSON */ }
  }
  if (r.code !== 0) {
    const msg = typeof out.msg === 'string' ? out.msg : (r.stderr.trim() || r.stdout.trim() || `exit ${r.code}`);
    const details = typeof out.details === 'string' && out.details ? ` (${out.details})` : '';
    throw new AmbitError('LOCAL_CNI_FAILED', `CNI ${command} failed in plugin ${plugin.type}: ${msg}${details}`,
      { details: { plugin: plugin.type, cniCode: out.code, stderr: r.stderr.trim() } });
  }
  return out as CniResult;
}

/** ADD every plugin in order, chaining results. On failure, DEL what was added (reverse) and rethrow. */
export async function cniAdd(list: CniConflist, inv: CniInvocation): Promise<CniResult> {
  let prev: CniResult | undefined;
  for (let i = 0; i < list.plugins.length; i++) {
    try {
      prev = await invokePlugin('ADD', list, list.plugins[i], inv, prev);
    } catch (err) {
      // Undo plugins 0..i (the failing one may have done part of its work).
      await cniDel({ ...list, plugins: list.plugins.slice(0, i + 1) }, inv, prev).catch(() => undefined);
      throw err;
    }
  }
  return prev ?? {};
}

/** DEL every plugin in reverse order with the cached ADD result. Keeps going on errors, throws the first. */
export async function cniDel(list: CniConflist, inv: CniInvocation, prevResult: CniResult | undefined): Promise<void> {
  let first: unknown;
  for (const plugin of [...list.plugins].reverse()) {
    try {
      await invokePlugin('DEL', list, plugin, inv, prevResult);
    } catch (err) {
      first ??= err;
    }
  }
  if (first !== undefined) throw first;
}

export interface NodeConflistOptions {
  podCidr: string;
  podGateway: string;
  ipamDataDir: string;
  /** Chain ambit-cni after bridge (mesh on); pod labels from the object store, or the API server. */
  mesh?: { agentSocket: string; objectStore: string } | { agentSocket: string; kubeconfig: string };
}

/** The conflist a node's "container runtime" uses for eth0 of every pod. */
export function nodeConflist(o: NodeConflistOptions): CniConflist {
  const plugins: CniPluginConf[] = [{
    type: 'bridge',
    bridge: 'cni0',
    isGateway: true,
    ipMasq: false,
    hairpinMode: true,
    ipam: {
      type: 'host-local',
      ranges: [[{ subnet: o.podCidr, gateway: o.podGateway }]],
      routes: [{ dst: '0.0.0.0/0' }],
      dataDir: o.ipamDataDir,
    },
  }];
  if (o.mesh) plugins.push({ type: 'ambit-cni', ...o.mesh });
  return { cniVersion: '1.0.0', name: 'ambit-pods', plugins };
}

/** Loopback, its own one-plugin network as container runtimes do it. */
export function loopbackConflist(): CniConflist {
  return { cniVersion: '1.0.0', name: 'ambit-loopback', plugins: [{ type: 'loopback' }] };
}
