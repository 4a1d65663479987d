/**
 * The kubeconfig that ambit-cni reads pod and namespace labels with (src/cni/kube-metadata.ts),
 * written next to the CNI config from the installer pod's own ServiceAccount: its token is
 * projected and rotated by the kubelet, so each pass compares and rewrites it when it changed.
 * JSON, so the plugin needs no YAML parser; mode 0600 (it holds a token). Its name has none of the
 * extensions a container runtime loads from the conf dir.
 */
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AmbitError, errorMessage } from '../../shared/errors.ts';

export const PLUGIN_KUBECONFIG_NAME = 'ambit-cni.kubeconfig';
export const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface PluginKubeconfig {
  /** Where the installer writes it (its mount of the node's conf dir). */
  file: string;
  /** The same file as the plugin on the node sees it (goes into the plugin entry). */
  hostFile: string;
  /** https://host:port of the API server. */
  server: string;
  caFile: string;
  tokenFile: string;
  /** Name to verify the server certificate against when `server` is an address it does not name. */
  tlsServerName?: string;
}

/**
 * What to write: the given server and credentials, else the in-cluster defaults (the API server
 * from the pod's environment, the mounted ServiceAccount).
 */
export function pluginKubeconfig(
  o: { confDir: string; hostConfDir: string; server?: string; tokenFile?: string; caFile?: string },
  env: NodeJS.ProcessEnv = process.env,
): PluginKubeconfig {
  let server = o.server;
  if (!server) {
    const host = env.KUBERNETES_SERVICE_HOST;
    if (!host) {
      throw new AmbitError('CNI_INSTALL_BAD_SETTINGS', 'KUBERNETES_SERVICE_HOST is not set, so the API server address is unknown; run the installer in a pod or pass --api-server');
    }
    server = `https://${host.includes(':') ? `[${host}]` : host}:${env.KUBERNETES_SERVICE_PORT || '443'}`;
  }
  if (!/^https:\/\/[^/]+/.test(server)) throw new AmbitError('CNI_INSTALL_BAD_SETTINGS', `the API server must be an https:// URL, got "${server}"`);
  return {
    file: join(o.confDir, PLUGIN_KUBECONFIG_NAME),
    hostFile: join(o.hostConfDir, PLUGIN_KUBECONFIG_NAME),
    server: server.replace(/\/+$/, ''),
    caFile: o.caFile ?? join(SA_DIR, 'ca.crt'),
    tokenFile: o.tokenFile ?? join(SA_DIR, 'token'),
  };
}

function render(k: PluginKubeconfig): string {
  let token: string;
  let ca: Buffer;
  try {
    token = readFileSync(k.tokenFile, 'utf8').trim();
    ca = readFileSync(k.caFile);
  } catch (err) {
    throw new AmbitError('CNI_INSTALL_NO_TOKEN', `cannot read the service account credentials for ambit-cni's kubeconfig: ${errorMessage(err)}; the installer pod needs its ServiceAccount token mounted`);
  }
  if (token === '') throw new AmbitError('CNI_INSTALL_NO_TOKEN', `${k.tokenFile} is empty`);
  return JSON.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'cluster', cluster: { server: k.server, 'certificate-authority-data': ca.toString('base64'), ...(k.tlsServerName ? { 'tls-server-name': k.tlsServerName } : {}) } }],
    users: [{ name: 'ambit-cni', user: { token } }],
    contexts: [{ name: 'ambit-cni', context: { cluster: 'cluster', user: 'ambit-cni' } }],
    'current-context': 'ambit-cni',
  }, null, 2) + '\n';
}

/** Writes the file when its content would change; true when it did. */
export function writePluginKubeconfig(k: PluginKubeconfig): boolean {
  const content = render(k);
  let current = '';
  try { current = readFileSync(k.file, 'utf8'); } catch { /* first write */ }
  if (current === content) return false;
  const tmp = `${k.file}.tmp-${process.pid}`;
  writeFileSync(tmp, content, { mode: 0o600 });
  renameSync(tmp, k.file);
  return true;
}

export function removePluginKubeconfig(file: string): boolean {
  if (!existsSync(file)) return false;
  rmSync(file, { force: true });
  return true;
}
