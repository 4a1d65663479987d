/**
 * ambit-cni's access to the local API server, set up the way `ambit cni-install --plugin-kubeconfig`
 * does it on a cluster: the ServiceAccount and least-privilege RBAC from cni/rbac.yaml, a token for
 * it (TokenRequest, renewed well before it expires), and a kubeconfig with that token that the
 * plugin reads pod and namespace labels with.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { KubeObject } from '../../api/k8s.ts';
import { readManifestPath } from '../../api/manifests.ts';
import { writePluginKubeconfig, PLUGIN_KUBECONFIG_NAME, type PluginKubeconfig } from '../../cni/installer/plugin-kubeconfig.ts';
import type { KubeClient } from '../../controller/sources/kube/client.ts';
import { statusOf } from '../../controller/sources/kube/client.ts';
import { AmbitError, errorMessage } from '../../shared/errors.ts';
import { logger } from '../../shared/log.ts';
import { PACKAGE_ROOT } from '../instance.ts';

const log = logger('local.cni-credentials');
export const CNI_NAMESPACE = 'ambit-system';
const TOKEN_SECONDS = 2 * 3600;
const RENEW_MS = 30 * 60_000;

export interface CniCredentialsOptions {
  client: KubeClient;
  /** Directory for the token and the kubeconfig. */
  dir: string;
  /** How the plugin reaches the API server (the relay), and the CA and TLS name to verify it with. */
  server: string;
  caFile: string;
  tlsServerName: string;
  /** Server-side apply of our RBAC objects. */
  apply(objects: KubeObject[]): Promise<void>;
}

export class CniCredentials {
  readonly kubeconfig: PluginKubeconfig;
  #o: CniCredentialsOptions;
  #timer: NodeJS.Timeout | undefined;

  constructor(o: CniCredentialsOptions) {
    this.#o = o;
    this.kubeconfig = {
      file: join(o.dir, PLUGIN_KUBECONFIG_NAME), hostFile: join(o.dir, PLUGIN_KUBECONFIG_NAME),
      server: o.server, caFile: o.caFile, tokenFile: join(o.dir, 'ambit-cni.token'), tlsServerName: o.tlsServerName,
    };
  }

  async start(): Promise<void> {
    mkdirSync(this.#o.dir, { recursive: true, mode: 0o700 });
    const parsed = await readManifestPath(join(PACKAGE_ROOT, 'cni', 'rbac.yaml'));
    if (parsed.errors.length) throw new AmbitError('LOCAL_KUBE_CNI', `cni/rbac.yaml: ${parsed.errors.map((e) => e.message).join('; ')}`);
    const ns: KubeObject = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: CNI_NAMESPACE } };
    const objects = parsed.objects.map((o) => (o.kind === 'ServiceAccount' ? { ...o, metadata: { ...o.metadata, namespace: CNI_NAMESPACE } } : o));
    await this.#o.apply([ns, ...objects]);
    await this.#renew();
    this.#timer = setInterval(() => {
      this.#renew().catch((err) => log.error('cannot renew the ambit-cni token; pod starts will fail once it expires', { error: errorMessage(err) }));
    }, RENEW_MS);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
  }

  async #renew(): Promise<void> {
    const path = `/api/v1/namespaces/${CNI_NAMESPACE}/serviceaccounts/ambit-cni/token`;
    let token: string | undefined;
    try {
      const tr = await this.#o.client.request<{ status?: { token?: string } }>('POST', path, {
        apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { expirationSeconds: TOKEN_SECONDS },
      });
      token = tr.status?.token;
    } catch (err) {
      throw new AmbitError('LOCAL_KUBE_CNI', `cannot get a token for ServiceAccount ${CNI_NAMESPACE}/ambit-cni (HTTP ${statusOf(err)}): ${errorMessage(err)}`);
    }
    if (!token) throw new AmbitError('LOCAL_KUBE_CNI', `the API server answered the TokenRequest for ${CNI_NAMESPACE}/ambit-cni without a token`);
    const tmp = `${this.kubeconfig.tokenFile}.tmp`;
    writeFileSync(tmp, token, { mode: 0o600 });
    renameSync(tmp, this.kubeconfig.tokenFile);
    writePluginKubeconfig(this.kubeconfig);
  }
}
