/** kubeconfig files for the local control plane, with the certificates embedded (copyable). */
import { readFileSync, writeFileSync } from 'node:fs';
import { stringify } from 'yaml';

export interface KubeconfigSpec {
  file: string;
  server: string;
  caFile: string;
  certFile: string;
  keyFile: string;
  user: string;
  cluster?: string;
}

export function writeKubeconfig(s: KubeconfigSpec): void {
  const b64 = (f: string) => Buffer.from(readFileSync(f)).toString('base64');
  const cluster = s.cluster ?? 'ambit-local';
  const doc = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: cluster, cluster: { server: s.server, 'certificate-authority-data': b64(s.caFile) } }],
    users: [{ name: s.user, user: { 'client-certificate-data': b64(s.certFile), 'client-key-data': b64(s.keyFile) } }],
    contexts: [{ name: `${s.user}@${cluster}`, context: { cluster, user: s.user } }],
    'current-context': `${s.user}@${cluster}`,
  };
  writeFileSync(s.file, stringify(doc), { mode: 0o600 });
}
