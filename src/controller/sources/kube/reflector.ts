/**
 * One watched resource: client-node's ListWatch (list, then watch from the list's resourceVersion;
 * a 410 Gone — the resourceVersion was compacted away — makes it relist, and the relist's
 * differences come out as adds/updates/deletes) wrapped with what it leaves to the caller: after
 * any other failure (API server down, connection reset, 5xx) ListWatch stops, and this restarts it
 * with capped exponential backoff, resuming from the last resourceVersion it saw. A CRD that is not
 * installed (404) or not allowed (403) is "absent": it counts as empty and is retried slowly.
 */
import {
  HttpMethod, IsomorphicFetchHttpLibrary, ListWatch, RequestContext, type KubernetesListObject, type KubernetesObject, type Watch,
} from '@kubernetes/client-node';
import type { KubeObject } from '../../../api/k8s.ts';
import { logger } from '../../../shared/log.ts';
import { KubeApiError, describeError, statusOf, type KubeClient } from './client.ts';
import { backoffMs, type WatchedResource } from './resources.ts';

const log = logger('controller.kube');

export interface ReflectorOptions {
  /** First retry delay after a failure; doubles per consecutive failure. */
  backoffBaseMs?: number;
  /** Retry delay cap (also the retry interval for an absent CRD). */
  backoffMaxMs?: number;
  /** Page size of lists. */
  pageSize?: number;
}

export interface ReflectorStats {
  /** Completed lists (the first one, then one per 410 relist). */
  lists: number;
  /** 410 Gone answers seen on watches. */
  expired: number;
  /** Restarts after a failure. */
  restarts: number;
}

/**
 * The watch transport ListWatch drives (in place of client-node's Watch, whose request can only be
 * cancelled once the response headers arrived, and which sends neither bookmarks nor a server-side
 * timeout). Streams the API server's watch events line by line; `done` is called once: null when the
 * stream ended or we aborted it (ListWatch then reconnects from its resourceVersion, or relists
 * after a 410), the error otherwise.
 */
class ReflectorWatch {
  stopped = false;
  forcedResourceVersion: string | undefined;
  current: AbortController | undefined;
  onExpired: () => void = () => {};
  #client: KubeClient;
  #http = new IsomorphicFetchHttpLibrary();

  constructor(client: KubeClient) {
    this.#client = client;
  }

  async watch(path: string, query: Record<string, string | number | boolean | undefined>, callback: (phase: string, obj: any, raw?: any) => void, done: (err: any) => void): Promise<AbortController> {
    const controller = new AbortController();
    this.current = controller;
    let finished = false;
    let idle: NodeJS.Timeout | undefined;
    const finish = (err: unknown): void => {
      if (finished) return;
      finished = true;
      clearTimeout(idle);
      // Our own abort (stop, resumeFrom) is an orderly end, not a failure to back off from.
      const ours = controller.signal.aborted && !(controller.signal.reason instanceof DOMException && controller.signal.reason.name === 'TimeoutError');
      controller.abort();
      if (err && !ours && statusOf(err) === 410) this.onExpired();
      done(ours ? null : err);
    };
    if (this.stopped) {
      // ListWatch may still be on its way to a watch when stopped (after a list or its reconnect delay).
      finish(null);
      return controller;
    }
    // The server ends each watch after timeoutSeconds (spread so replicas do not reconnect in step);
    // no byte at all for longer than that means a dead connection.
    const timeoutSeconds = 300 + Math.floor(Math.random() * 300);
    const armIdle = (ms = (timeoutSeconds + 30) * 1000) => {
      clearTimeout(idle);
      idle = setTimeout(() => controller.abort(new DOMException(`watch ${path}: no answer for ${Math.round(ms / 1000)}s`, 'TimeoutError')), ms);
      idle.unref();
    };
    const params = new URLSearchParams({ watch: 'true', allowWatchBookmarks: 'true', timeoutSeconds: String(timeoutSeconds) });
    for (const [k, v] of Object.entries(query)) if (v !== undefined) params.set(k, String(v));
    const forced = this.forcedResourceVersion;
    if (forced !== undefined) params.set('resourceVersion', forced);
    try {
      armIdle(30_000); // for the response headers
      const ctx = new RequestContext(`${this.#client.server}${path}?${params}`, HttpMethod.GET);
      await this.#client.config.applySecurityAuthentication(ctx);
      ctx.setHeaderParam('Accept', 'application/json');
      ctx.setSignal(controller.signal);
      const res = await this.#http.send(ctx).toPromise();
      // Used up by the first watch the API server answered (whatever the answer).
      if (forced !== undefined && this.forcedResourceVersion === forced) this.forcedResourceVersion = undefined;
      if (res.httpStatusCode !== 200) {
        const text = await res.body.text().catch(() => '');
        let st: { reason?: string; message?: string } = {};
        try { st = JSON.parse(text); } catch { /* not a Status */ }
        throw new KubeApiError(res.httpStatusCode, st.reason ?? 'Unknown', `watch ${path}: ${res.httpStatusCode} ${st.message ?? text.slice(0, 200)}`);
      }
      const stream = res.body.stream();
      if (!stream) throw new KubeApiError(0, 'NoBody', `watch ${path}: no response body`);
      armIdle();
      void this.#read(stream, path, () => armIdle(), callback).then(() => finish(null), finish);
    } catch (err) {
      finish(err);
    }
    return controller;
  }

  async #read(stream: ReadableStream<Uint8Array>, path: string, onData: () => void, callback: (phase: string, obj: any, raw?: any) => void): Promise<void> {
    const reader = stream.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      onData();
      buf += decoder.decode(value, { stream: true });
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (!line) continue;
        let ev: { type?: string; object?: any };
        try {
          ev = JSON.parse(line);
        } catch {
          log.debug('unparsable watch line skipped', { path, line: line.slice(0, 200) });
          continue;
        }
        if (ev.type === 'ERROR' && ev.object?.code === 410) this.onExpired();
        callback(ev.type ?? '', ev.object, ev);
      }
    }
  }
}

export class Reflector {
  readonly resource: WatchedResource;
  readonly stats: ReflectorStats = { lists: 0, expired: 0, restarts: 0 };
  #client: KubeClient;
  #lw: ListWatch<KubernetesObject>;
  #watch: ReflectorWatch;
  #onChange: () => void;
  #opts: Required<ReflectorOptions>;
  #synced = false;
  #absent: string | undefined;
  #lastError: string | undefined;
  #failures = 0;
  #lastFailureAt = 0;
  #retry: NodeJS.Timeout | undefined;
  #stopped = true;

  constructor(client: KubeClient, resource: WatchedResource, onChange: () => void, opts: ReflectorOptions = {}) {
    this.#client = client;
    this.resource = resource;
    this.#onChange = onChange;
    this.#opts = { backoffBaseMs: opts.backoffBaseMs ?? 250, backoffMaxMs: opts.backoffMaxMs ?? 10_000, pageSize: opts.pageSize ?? 500 };
    this.#watch = new ReflectorWatch(client);
    this.#watch.onExpired = () => {
      this.stats.expired++;
      log.info('watch expired (410 Gone), relisting', { resource: this.#name });
    };
    this.#lw = new ListWatch(resource.path, this.#watch as unknown as Watch, () => this.#list(), false);
    this.#lw.on('change', () => this.#onChange());
    this.#lw.on('error', (err) => this.#failed(err));
  }

  get #name(): string { return `${this.resource.apiVersion} ${this.resource.kind}`; }

  /** Listed at least once (or known absent, for an optional resource). */
  get ready(): boolean { return this.#synced || (this.resource.optional && this.#absent !== undefined); }
  /** Why an optional resource is not watched (CRD missing, forbidden); undefined when watched. */
  get absent(): string | undefined { return this.#absent; }
  get lastError(): string | undefined { return this.#lastError; }

  /** The current objects, as the API server returns them. */
  objects(): KubeObject[] {
    return this.#lw.list() as unknown as KubeObject[];
  }

  start(): void {
    this.#stopped = false;
    this.#watch.stopped = false;
    void this.#lw.start();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#watch.stopped = true;
    clearTimeout(this.#retry);
    await this.#lw.stop();
    this.#watch.current?.abort();
  }

  /**
   * Drop the current watch and resume from `resourceVersion` (tests use an old one to make the API
   * server answer 410 Gone, as it does after a long disconnect).
   */
  resumeFrom(resourceVersion: string): void {
    this.#watch.forcedResourceVersion = resourceVersion;
    this.#watch.current?.abort();
  }

  async #list(): Promise<KubernetesListObject<KubernetesObject>> {
    const items: KubernetesObject[] = [];
    let cont = '';
    let rv = '';
    do {
      const q = new URLSearchParams({ limit: String(this.#opts.pageSize) });
      if (cont) q.set('continue', cont);
      const page = await this.#client.request<{ metadata?: { resourceVersion?: string; continue?: string }; items?: KubernetesObject[] }>('GET', `${this.resource.path}?${q}`);
      for (const it of page.items ?? []) items.push({ ...it, apiVersion: this.resource.apiVersion, kind: this.resource.kind });
      rv = page.metadata?.resourceVersion ?? rv;
      cont = page.metadata?.continue ?? '';
    } while (cont);
    this.stats.lists++;
    const wasAbsent = this.#absent;
    this.#synced = true;
    this.#absent = undefined;
    this.#failures = 0;
    if (this.#lastError !== undefined || wasAbsent !== undefined) log.info('watch recovered', { resource: this.#name, objects: items.length });
    this.#lastError = undefined;
    // After ListWatch has taken the items in: an empty list has no add callbacks, yet it may make
    // the source ready, and coming back from absent changes the snapshot (its error goes).
    setImmediate(() => this.#onChange());
    return { apiVersion: 'v1', kind: 'List', metadata: { resourceVersion: rv }, items };
  }

  #failed(err: unknown): void {
    if (this.#stopped) return;
    const status = statusOf(err);
    const message = describeError(err);
    if (this.resource.optional && (status === 404 || status === 403)) {
      const why = status === 404
        ? `${this.#name} is not served (CRD not installed?); treated as empty, retrying every ${Math.round(this.#opts.backoffMaxMs / 1000)}s — apply the Ambit CRDs (controller/crds/)`
        : `${this.#name}: forbidden (${message}); treated as empty, retrying — grant the controller list/watch on it`;
      if (this.#absent !== why) {
        log.warn('mesh resource unavailable', { resource: this.#name, reason: why });
        this.#absent = why;
        this.#onChange();
      }
      this.#schedule(this.#opts.backoffMaxMs);
      return;
    }
    // A long quiet spell since the last failure means this is a new outage: start the backoff over.
    if (Date.now() - this.#lastFailureAt > 4 * this.#opts.backoffMaxMs) this.#failures = 0;
    this.#lastFailureAt = Date.now();
    const delay = backoffMs(this.#failures++, this.#opts.backoffBaseMs, this.#opts.backoffMaxMs);
    if (message !== this.#lastError) log.warn('watch failed, retrying', { resource: this.#name, error: message, retryMs: delay });
    else log.debug('watch failed again, retrying', { resource: this.#name, retryMs: delay });
    this.#lastError = message;
    this.#schedule(delay);
  }

  #schedule(ms: number): void {
    clearTimeout(this.#retry);
    this.#retry = setTimeout(() => {
      if (this.#stopped) return;
      this.stats.restarts++;
      void this.#lw.start();
    }, ms);
  }
}
