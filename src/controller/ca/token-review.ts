/**
 * Node agents in a cluster authenticate to the CA with a projected ServiceAccount token (audience
 * ambit-ca). The API server checks it (TokenReview); we then require the node agent's service
 * account and take the node from the pod the token is bound to: from the token's node claim when
 * the API server has one (Kubernetes 1.30+), else by reading the bound pod (its uid must match, so a
 * token of a deleted pod whose name was reused does not count).
 */
import { createHash } from 'node:crypto';
import { errorMessage } from '../../shared/errors.ts';
import { logger } from '../../shared/log.ts';
import type { KubeClient } from '../sources/kube/client.ts';
import { statusOf } from '../sources/kube/errors.ts';

const log = logger('ca.token');

export const DEFAULT_TOKEN_AUDIENCE = 'ambit-ca';
export const DEFAULT_AGENT_USERNAME = 'system:serviceaccount:ambit-system:ambit-agent';
const NODE_NAME = 'authentication.kubernetes.io/node-name';
const POD_NAME = 'authentication.kubernetes.io/pod-name';
const POD_UID = 'authentication.kubernetes.io/pod-uid';
/** A reviewed token is trusted this long without asking again (renewals come in bursts). */
const CACHE_MS = 30_000;
const CACHE_MAX = 4096;

export type TokenVerdict =
  | { ok: true; node: string; username: string; pod: string }
  | { ok: false; why: 'unauthenticated' | 'denied' | 'unavailable'; reason: string };

export interface TokenReviewerOptions {
  audience?: string;
  /** The node agent's ServiceAccount as a username (system:serviceaccount:NS:NAME). */
  agentUsername?: string;
}

interface TokenReviewStatus {
  authenticated?: boolean;
  error?: string;
  audiences?: string[];
  user?: { username?: string; extra?: Record<string, string[]> };
}

/** Accepts NS/NAME or system:serviceaccount:NS:NAME; undefined when it is neither. */
export function agentUsername(value: string): string | undefined {
  const m = /^system:serviceaccount:([a-z0-9-]+):([a-z0-9.-]+)$/.exec(value) ?? /^([a-z0-9-]+)\/([a-z0-9.-]+)$/.exec(value);
  return m ? `system:serviceaccount:${m[1]}:${m[2]}` : undefined;
}

export class TokenReviewer {
  readonly audience: string;
  readonly agentUsername: string;
  #client: KubeClient;
  #cache = new Map<string, { at: number; verdict: TokenVerdict & { ok: true } }>();

  constructor(client: KubeClient, o: TokenReviewerOptions = {}) {
    this.#client = client;
    this.audience = o.audience ?? DEFAULT_TOKEN_AUDIENCE;
    this.agentUsername = o.agentUsername ?? DEFAULT_AGENT_USERNAME;
  }

  /** Who the token's bearer is: the node its pod runs on, or why it is refused. */
  async review(token: string): Promise<TokenVerdict> {
    const key = createHash('sha256').update(token).digest('hex');
    const hit = this.#cache.get(key);
    if (hit && Date.now() - hit.at < CACHE_MS) return hit.verdict;
    const verdict = await this.#review(token);
    if (verdict.ok) {
      if (this.#cache.size >= CACHE_MAX) this.#cache.clear();
      this.#cache.set(key, { at: Date.now(), verdict });
    } else {
      log.warn('agent token refused', { reason: verdict.reason });
    }
    return verdict;
  }

  async #review(token: string): Promise<TokenVerdict> {
    let status: TokenReviewStatus;
    try {
      const res = await this.#client.request<{ status?: TokenReviewStatus }>('POST', '/apis/authentication.k8s.io/v1/tokenreviews', {
        apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences: [this.audience] },
      });
      status = res.status ?? {};
    } catch (err) {
      return { ok: false, why: 'unavailable', reason: `cannot check the token with the API server (TokenReview): ${errorMessage(err)}` };
    }
    if (!status.authenticated) {
      // The API server says why only in general terms (invalid, expired, wrong audience...).
      return { ok: false, why: 'unauthenticated', reason: `the API server did not accept the token for audience ${this.audience}${status.error ? `: ${status.error}` : ''}` };
    }
    if (!(status.audiences ?? [this.audience]).includes(this.audience)) {
      return { ok: false, why: 'unauthenticated', reason: `the token is not for audience ${this.audience} (it is for ${(status.audiences ?? []).join(', ')})` };
    }
    const username = status.user?.username ?? '';
    if (username !== this.agentUsername) {
      return { ok: false, why: 'denied', reason: `the token belongs to ${username || 'an unnamed user'}, not to the node agent's service account ${this.agentUsername}` };
    }
    const extra = status.user?.extra ?? {};
    const pod = extra[POD_NAME]?.[0];
    const podUid = extra[POD_UID]?.[0];
    if (!pod || !podUid) {
      return { ok: false, why: 'denied', reason: 'the token is not bound to a pod (use a projected service account token, which names the agent pod)' };
    }
    const node = extra[NODE_NAME]?.[0] ?? await this.#nodeOfPod(username, pod, podUid);
    if (typeof node !== 'string') return node;
    return { ok: true, node, username, pod };
  }

  /** Older API servers name only the pod: read it to learn its node. */
  async #nodeOfPod(username: string, pod: string, uid: string): Promise<string | TokenVerdict & { ok: false }> {
    const namespace = username.split(':')[2];
    let p: { metadata?: { uid?: string }; spec?: { nodeName?: string } };
    try {
      p = await this.#client.request('GET', `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(pod)}`);
    } catch (err) {
      if (statusOf(err) === 404) return { ok: false, why: 'denied', reason: `the token's pod ${namespace}/${pod} no longer exists` };
      return { ok: false, why: 'unavailable', reason: `cannot read the token's pod ${namespace}/${pod}: ${errorMessage(err)}` };
    }
    if (p.metadata?.uid !== uid) return { ok: false, why: 'denied', reason: `the token's pod ${namespace}/${pod} was replaced (uid ${uid} is gone)` };
    if (!p.spec?.nodeName) return { ok: false, why: 'denied', reason: `the token's pod ${namespace}/${pod} is not scheduled on a node` };
    return p.spec.nodeName;
  }
}

/**
 * Whether the API server has a pod of namespace/serviceAccount on `node` right now (the CA's check
 * when the watched snapshot does not show one yet: it may lag a pod created a moment ago).
 */
export async function podOnNode(client: KubeClient, node: string, namespace: string, serviceAccount: string): Promise<boolean> {
  const selector = encodeURIComponent(`spec.nodeName=${node}`);
  const list = await client.request<{ items?: { spec?: { serviceAccountName?: string }; status?: { phase?: string } }[] }>(
    'GET', `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods?fieldSelector=${selector}`);
  return (list.items ?? []).some((p) => (p.spec?.serviceAccountName || 'default') === serviceAccount
    && p.status?.phase !== 'Succeeded' && p.status?.phase !== 'Failed');
}
