/**
 * Pod and namespace labels straight from the API server, for ambit-cni on a real cluster: the
 * enrollment decision has to be made before the pod's containers start, so it cannot wait for the
 * controller's push to reach the agent. Two GETs in parallel with a short timeout; any answer but
 * 200/404 fails the ADD (the kubelet retries) rather than starting an ambient pod outside the mesh.
 */
import { request } from 'node:https';
import type { Namespace, Pod } from '../api/k8s.ts';
import { AmbitError, errorMessage } from '../shared/errors.ts';
import { loadKubeEndpoint, type KubeEndpoint } from './kubeconfig-lite.ts';
import type { PodMetadataSource } from './pod-metadata.ts';

export const KUBE_TIMEOUT_MS = 3000;

export class KubeMetadataSource implements PodMetadataSource {
  #kubeconfig: string;
  #endpoint: Promise<KubeEndpoint> | undefined;
  #timeoutMs: number;

  constructor(kubeconfig: string, timeoutMs = KUBE_TIMEOUT_MS) {
    this.#kubeconfig = kubeconfig;
    this.#timeoutMs = timeoutMs;
  }

  pod(namespace: string, name: string): Promise<Pod | undefined> {
    return this.#get<Pod>(`/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`, `pods "${name}" in namespace ${namespace}`);
  }

  namespace(name: string): Promise<Namespace | undefined> {
    return this.#get<Namespace>(`/api/v1/namespaces/${encodeURIComponent(name)}`, `namespaces "${name}"`);
  }

  async #get<T>(path: string, what: string): Promise<T | undefined> {
    this.#endpoint ??= loadKubeEndpoint(this.#kubeconfig);
    const ep = await this.#endpoint;
    const { status, body } = await get(ep, path, this.#timeoutMs).catch((err: unknown) => {
      throw new AmbitError('CNI_KUBE_UNREACHABLE', `cannot read ${what} from the Kubernetes API server ${ep.server}: ${errorMessage(err)}; check that the node reaches it and that kubeconfig ${this.#kubeconfig} is current`, { cause: err });
    });
    if (status === 200) {
      try {
        return JSON.parse(body) as T;
      } catch (err) {
        throw new AmbitError('CNI_KUBE_BAD_REPLY', `the API server ${ep.server} answered ${what} with invalid JSON: ${errorMessage(err)}`);
      }
    }
    if (status === 404) return undefined;
    const message = statusMessage(body);
    if (status === 401 || status === 403) {
      throw new AmbitError('CNI_KUBE_FORBIDDEN', `the API server ${ep.server} refused to show ${what} (HTTP ${status}${message ? `: ${message}` : ''}); ambit-cni needs get on pods and namespaces (ClusterRole ambit-cni in cni/rbac.yaml) and a valid token in ${this.#kubeconfig}`);
    }
    throw new AmbitError('CNI_KUBE_BAD_REPLY', `the API server ${ep.server} answered HTTP ${status} for ${what}${message ? `: ${message}` : ''}`);
  }
}

function statusMessage(body: string): string {
  try {
    const m = (JSON.parse(body) as { message?: unknown }).message;
    return typeof m === 'string' ? m : '';
  } catch {
    return body.slice(0, 200);
  }
}

function get(ep: KubeEndpoint, path: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${ep.server}${path}`, {
      method: 'GET',
      headers: { accept: 'application/json', ...(ep.token ? { authorization: `Bearer ${ep.token}` } : {}) },
      ca: ep.ca, cert: ep.cert, key: ep.key, rejectUnauthorized: !ep.insecure, servername: ep.servername,
      agent: false, timeout: timeoutMs,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}
