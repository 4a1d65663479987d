/**
 * Where the control-plane binaries are: built by scripts/build-kube.sh into .cache/kube/ from the
 * versions in tools/kube/versions.env. AMBIT_KUBE_CACHE moves that directory (as it does for the
 * script); AMBIT_KUBE_BIN_DIR / AMBIT_ETCD_BIN_DIR point at other binaries.
 */
import { accessSync, constants, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AmbitError } from '../../shared/errors.ts';
import { PACKAGE_ROOT } from '../instance.ts';

export interface KubeBinaries {
  /** Holds kube-apiserver, kube-controller-manager and kubectl. */
  kubeBinDir: string;
  etcdBinDir: string;
  kubeVersion: string;
  etcdVersion: string;
}

/** KEY=VALUE lines of tools/kube/versions.env (comments and blank lines skipped). */
export function readVersions(file = join(PACKAGE_ROOT, 'tools', 'kube', 'versions.env')): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^\s*([A-Z_]+)=(\S+)\s*$/.exec(line);
    if (m) out[m[1]] = m[2];
  }
  return out;
}

export function kubeBinaries(): KubeBinaries {
  const v = readVersions();
  const kubeVersion = v.KUBE_VERSION ?? 'unknown';
  const etcdVersion = v.ETCD_VERSION ?? 'unknown';
  const cache = process.env.AMBIT_KUBE_CACHE ?? join(PACKAGE_ROOT, '.cache', 'kube');
  const b: KubeBinaries = {
    kubeBinDir: process.env.AMBIT_KUBE_BIN_DIR ?? join(cache, `kubernetes-${kubeVersion}`, 'bin'),
    etcdBinDir: process.env.AMBIT_ETCD_BIN_DIR ?? join(cache, `etcd-${etcdVersion}`, 'bin'),
    kubeVersion,
    etcdVersion,
  };
  const missing: string[] = [];
  for (const [dir, name] of [[b.kubeBinDir, 'kube-apiserver'], [b.kubeBinDir, 'kube-controller-manager'], [b.kubeBinDir, 'kubectl'], [b.etcdBinDir, 'etcd']]) {
    try { accessSync(join(dir, name), constants.X_OK); } catch { missing.push(join(dir, name)); }
  }
  if (missing.length > 0) {
    throw new AmbitError('KUBE_NOT_BUILT', `the Kubernetes control plane is not built (missing ${missing.join(', ')}): run scripts/build-kube.sh (a cold build takes about 6 minutes on 2 cores)`);
  }
  return b;
}
