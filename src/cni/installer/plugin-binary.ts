/**
 * The `ambit-cni` executable in the node's CNI bin dir (/opt/cni/bin), which the container runtime
 * execs on the host for every pod.
 *
 * Ambit's plugin is TypeScript run by Node, not a static binary, so what lands in the bin dir is one
 * of two things:
 * - a shim (default): a tiny shell script that execs `<ambit root>/bin/ambit-cni`, where the ambit
 *   root is an Ambit install visible on the host (`ambit local`: this checkout; in a cluster: the
 *   host path the installer DaemonSet copies the image's /opt/ambit tree to);
 * - a file given with --plugin-source, copied byte for byte (a self-contained build).
 * Either way it is replaced atomically (temp + rename: a running plugin keeps its old inode).
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { AmbitError } from '../../shared/errors.ts';
import { writeAtomic } from './conf-dir.ts';
import { AMBIT_PLUGIN_TYPE } from './chain.ts';

export type PluginSource = { kind: 'shim'; ambitRoot: string } | { kind: 'file'; path: string };

/** This install's own root (…/src/cni/installer -> …). */
export const OWN_ROOT = resolve(import.meta.dirname, '../../..');

const SHIM_MARK = '# ambit-cni shim, written by ambit cni-install';

function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The bytes to install, checked: the target of a shim must exist and be an Ambit install. */
export function pluginContent(source: PluginSource): Buffer {
  if (source.kind === 'file') {
    try {
      return readFileSync(source.path);
    } catch (err) {
      throw new AmbitError('CNI_INSTALL_NO_PLUGIN', `cannot read the plugin to install, ${source.path}: ${(err as Error).message}`);
    }
  }
  const target = join(resolve(source.ambitRoot), 'bin', AMBIT_PLUGIN_TYPE);
  if (!existsSync(target)) {
    throw new AmbitError('CNI_INSTALL_NO_PLUGIN', `${target} does not exist: --ambit-root ${source.ambitRoot} must be an Ambit install visible on the host (it holds bin/ambit-cni)`);
  }
  return Buffer.from(`#!/bin/sh\n${SHIM_MARK}; runs the plugin of the Ambit install at ${source.ambitRoot}.\nexec ${shQuote(target)} "$@"\n`);
}

export function pluginPath(binDir: string): string {
  return join(binDir, AMBIT_PLUGIN_TYPE);
}

/** Install (or refresh) the plugin; false when the same bytes are already there. */
export function installPlugin(binDir: string, content: Buffer): boolean {
  const path = pluginPath(binDir);
  try {
    if (readFileSync(path).equals(content)) return false;
  } catch { /* not installed yet */ }
  if (!existsSync(binDir)) throw new AmbitError('CNI_INSTALL_IO', `the CNI bin dir ${binDir} does not exist; mount the host's CNI bin dir there or pass --bin-dir`);
  writeAtomic(path, content, { mode: 0o755 });
  return true;
}

/** Remove the plugin; false when it was not there. */
export function removePlugin(binDir: string): boolean {
  const path = pluginPath(binDir);
  if (!existsSync(path)) return false;
  rmSync(path, { force: true });
  return true;
}
