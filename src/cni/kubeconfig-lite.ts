/**
 * Just enough kubeconfig for ambit-cni: the current context's server, CA and credentials. The plugin
 * runs once per pod start, so it reads the file itself rather than loading a Kubernetes client
 * (hundreds of milliseconds and tens of MB). JSON (what `ambit cni-install` writes) is parsed
 * directly; YAML loads the yaml package.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { AmbitError, errorMessage } from '../shared/errors.ts';

export interface KubeEndpoint {
  /** https://host:port (no trailing slash). */
  server: string;
  ca: Buffer | undefined;
  insecure: boolean;
  /** kubeconfig `tls-server-name`: the name to verify instead of the server's host. */
  servername: string | undefined;
  token: string | undefined;
  cert: Buffer | undefined;
  key: Buffer | undefined;
}

type Named<T> = { name?: unknown } & Record<string, T>;

const bad = (file: string, msg: string) => new AmbitError('CNI_KUBECONFIG', `kubeconfig ${file}: ${msg}`);

async function parse(file: string, text: string): Promise<Record<string, unknown>> {
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch { /* not JSON: YAML */ }
  try {
    const { parse: parseYaml } = await import('yaml');
    const doc = parseYaml(text) as unknown;
    if (doc && typeof doc === 'object' && !Array.isArray(doc)) return doc as Record<string, unknown>;
  } catch (err) {
    throw bad(file, `not valid JSON or YAML (${errorMessage(err)})`);
  }
  throw bad(file, 'must be a mapping with clusters, users, contexts and current-context');
}

function pick(file: string, doc: Record<string, unknown>, list: string, name: string, body: string): Record<string, unknown> {
  const items = doc[list];
  const found = Array.isArray(items) ? (items as Named<unknown>[]).find((i) => i?.name === name) : undefined;
  const inner = found?.[body];
  if (!inner || typeof inner !== 'object') throw bad(file, `${list} has no entry named ${JSON.stringify(name)} (with a "${body}" field)`);
  return inner as Record<string, unknown>;
}

/** Reads `file`; relative paths inside it are relative to its directory, as kubectl does. */
export async function loadKubeEndpoint(file: string): Promise<KubeEndpoint> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new AmbitError('CNI_KUBECONFIG', `cannot read kubeconfig ${file} (config field "kubeconfig"): ${errorMessage(err)}; the CNI installer writes it, is it running on this node?`);
  }
  const doc = await parse(file, text);
  const current = doc['current-context'];
  if (typeof current !== 'string' || current === '') throw bad(file, 'current-context is not set');
  const context = pick(file, doc, 'contexts', current, 'context');
  const cluster = pick(file, doc, 'clusters', String(context.cluster ?? ''), 'cluster');
  const user = context.user === undefined ? {} : pick(file, doc, 'users', String(context.user), 'user');
  const str = (o: Record<string, unknown>, k: string): string | undefined => (typeof o[k] === 'string' && o[k] !== '' ? o[k] as string : undefined);
  const fileOrData = (o: Record<string, unknown>, fileKey: string, dataKey: string): Buffer | undefined => {
    const data = str(o, dataKey);
    if (data) return Buffer.from(data, 'base64');
    const path = str(o, fileKey);
    if (!path) return undefined;
    const full = isAbsolute(path) ? path : join(dirname(file), path);
    try {
      return readFileSync(full);
    } catch (err) {
      throw bad(file, `${fileKey} ${full}: ${errorMessage(err)}`);
    }
  };
  const server = str(cluster, 'server');
  if (!server || !/^https:\/\//.test(server)) throw bad(file, `cluster server must be an https:// URL, got ${JSON.stringify(cluster.server ?? null)}`);
  let token = str(user, 'token');
  const tokenFile = str(user, 'tokenFile');
  if (!token && tokenFile) token = fileOrData({ tokenFile }, 'tokenFile', '')?.toString('utf8').trim();
  return {
    server: server.replace(/\/+$/, ''),
    ca: fileOrData(cluster, 'certificate-authority', 'certificate-authority-data'),
    insecure: cluster['insecure-skip-tls-verify'] === true,
    servername: str(cluster, 'tls-server-name'),
    token,
    cert: fileOrData(user, 'client-certificate', 'client-certificate-data'),
    key: fileOrData(user, 'client-key', 'client-key-data'),
  };
}
