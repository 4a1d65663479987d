/**
 * A thin JSON client for the Kubernetes API. @kubernetes/client-node gives the kubeconfig handling
 * (files, in-cluster service account, TLS, tokens) and the HTTP transport; requests and responses
 * stay plain JSON objects (no generated model classes, which turn timestamps into Dates and drop
 * apiVersion/kind from list items), so what the controller sees has the shape of a manifest file.
 */
import { HttpMethod, IsomorphicFetchHttpLibrary, KubeConfig, RequestContext } from '@kubernetes/client-node';
import { AmbitError, errorMessage } from '../../../shared/errors.ts';

/** Where to find the API server: a kubeconfig file, or the pod's service account (in-cluster). */
export type KubeTarget = { kubeconfig: string } | { inCluster: true };

export function loadKubeConfig(target: KubeTarget): KubeConfig {
  const kc = new KubeConfig();
  try {
    if ('kubeconfig' in target) kc.loadFromFile(target.kubeconfig);
    else kc.loadFromCluster();
  } catch (err) {
    const what = 'kubeconfig' in target ? `kubeconfig ${target.kubeconfig}` : 'the in-cluster service account (/var/run/secrets/kubernetes.io/serviceaccount)';
    throw new AmbitError('CONTROLLER_KUBECONFIG', `cannot load ${what}: ${errorMessage(err)}`, { cause: err });
  }
  if (!kc.getCurrentCluster()) {
    throw new AmbitError('CONTROLLER_KUBECONFIG', `kubeconfig has no current cluster (current-context ${JSON.stringify(kc.getCurrentContext())}); set current-context`);
  }
  return kc;
}

export { KubeApiError, statusOf, describeError } from './errors.ts';
import { KubeApiError, describeError } from './errors.ts';

export const MERGE_PATCH = 'application/merge-patch+json';

export class KubeClient {
  readonly config: KubeConfig;
  readonly server: string;
  #http = new IsomorphicFetchHttpLibrary();

  constructor(config: KubeConfig) {
    this.config = config;
    this.server = config.getCurrentCluster()!.server.replace(/\/+$/, '');
  }

  /** One request; resolves with the parsed body, rejects with KubeApiError. */
  async request<T = unknown>(method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', path: string, body?: unknown, opts: { contentType?: string; timeoutMs?: number } = {}): Promise<T> {
    const ctx = new RequestContext(this.server + path, HttpMethod[method]);
    await this.config.applySecurityAuthentication(ctx);
    ctx.setHeaderParam('Accept', 'application/json');
    if (body !== undefined) {
      ctx.setHeaderParam('Content-Type', opts.contentType ?? 'application/json');
      ctx.setBody(JSON.stringify(body));
    }
    ctx.setSignal(AbortSignal.timeout(opts.timeoutMs ?? 30_000));
    let res;
    try {
      res = await this.#http.send(ctx).toPromise();
    } catch (err) {
      throw new KubeApiError(0, 'Unreachable', `${method} ${path}: cannot reach ${this.server}: ${describeError(err)}`);
    }
    const text = await res.body.text();
    let parsed: unknown;
    try {
      parsed = text === '' ? undefined : JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    if (res.httpStatusCode < 200 || res.httpStatusCode > 299) {
      const st = (parsed ?? {}) as { reason?: string; message?: string };
      throw new KubeApiError(res.httpStatusCode, st.reason ?? 'Unknown', `${method} ${path}: ${res.httpStatusCode} ${st.message ?? text.slice(0, 200)}`);
    }
    return parsed as T;
  }
}
