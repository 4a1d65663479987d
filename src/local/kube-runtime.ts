/**
 * The local runtime as kubelet (`ambit local up --kubernetes`): the pods come from a real API
 * server. Registers the instance's nodes as Node objects (and keeps their Ready heartbeat), binds
 * unscheduled pods to a node (there is no kube-scheduler), runs the pods bound to its nodes with the
 * same sandbox + processes as the default runtime, patches their status so kube-controller-manager
 * builds EndpointSlices, and finishes deletions (stop, then delete with grace 0). Each node's
 * kube-proxy rules follow the API server's Services and EndpointSlices.
 */
import type { Deployment, KubeObject, Pod, Service } from '../api/k8s.ts';
import { KubeClient, loadKubeConfig, MERGE_PATCH, statusOf } from '../controller/sources/kube/client.ts';
import { Reflector } from '../controller/sources/kube/reflector.ts';
import type { WatchedResource } from '../controller/sources/kube/resources.ts';
import { AmbitError, errorMessage } from '../shared/errors.ts';
import { logger } from '../shared/log.ts';
import type { CniConflist } from './cni-exec.ts';
import { CNI_BIN_DIR, PACKAGE_ROOT, podNetnsName, type NodeInfo, type Paths } from './instance.ts';
import { KubeProxy, type ProxyEndpoint, type ProxyService } from './kube-proxy.ts';
import type { Ledger } from './ledger.ts';
import { applyRank } from './objects.ts';
import { PodRunner } from './pod-runner.ts';
import { prepareNode } from './node-setup.ts';
import { NETNS_ANNOTATION, type ApplyOutcome, type ObjectResult } from './runtime.ts';
import { createSandbox, destroySandbox } from './sandbox.ts';
import { validatePodSpec } from './objects.ts';
import { startApiRelay, type ApiRelay } from './kube/api-relay.ts';
import { CniCredentials } from './kube/cni-credentials.ts';
import { renewNodeLease } from './kube/node-lease.ts';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const log = logger('local.kubelet');
const FIELD_MANAGER = 'ambit-local';
const HEARTBEAT_MS = 10_000;

export interface KubeRuntimeOptions {
  instance: string;
  paths: Paths;
  nodes: NodeInfo[];
  ledger: Ledger;
  kubeconfig: string;
  conflistFor: (node: NodeInfo) => CniConflist;
  /**
   * With the mesh: ambit-cni reads pod labels from the API server, reached from the node netns
   * through a relay on the host bridge address, with a token of its own ServiceAccount.
   */
  cni?: { listenHost: string; caFile: string };
}

const watched = (apiVersion: string, kind: string, path: string): WatchedResource => ({ apiVersion, kind, path, optional: false, ownStatus: false });

interface SliceEndpoint { addresses?: string[]; conditions?: { ready?: boolean } }
interface SlicePort { name?: string; port?: number; protocol?: string }
interface EndpointSlice extends KubeObject { endpoints?: SliceEndpoint[]; ports?: SlicePort[] }

/** Equal but for the bookkeeping an apply may touch (resourceVersion, managedFields times). */
function sameContent(a: KubeObject, b: KubeObject): boolean {
  const strip = (o: KubeObject) => JSON.stringify({ ...o, metadata: { ...o.metadata, resourceVersion: undefined, managedFields: undefined } });
  return strip(a) === strip(b);
}

interface ApiResource { name: string; kind: string; namespaced: boolean }

export class KubeRuntime {
  readonly nodes: NodeInfo[];
  readonly client: KubeClient;
  #o: KubeRuntimeOptions;
  #relay: ApiRelay | undefined;
  #cniCredentials: CniCredentials | undefined;
  #pods: Reflector;
  #services: Reflector;
  #slices: Reflector;
  #namespaces: Reflector;
  #proxies = new Map<string, KubeProxy>();
  /** Runners by pod uid. */
  #runners = new Map<string, PodRunner>();
  #lastStatus = new Map<string, string>();
  #patching = new Map<string, Promise<void>>();
  #binding = new Set<string>();
  #finishing = new Set<string>();
  #rr = 0;
  #dirty = false;
  #timers: NodeJS.Timeout[] = [];
  #stopped = false;
  #resources = new Map<string, ApiResource[]>();
  #binDirs = [CNI_BIN_DIR, join(PACKAGE_ROOT, 'bin')];

  constructor(o: KubeRuntimeOptions) {
    this.#o = o;
    this.nodes = o.nodes;
    this.client = new KubeClient(loadKubeConfig({ kubeconfig: o.kubeconfig }));
    const kick = () => this.#kick();
    this.#pods = new Reflector(this.client, watched('v1', 'Pod', '/api/v1/pods'), kick);
    this.#services = new Reflector(this.client, watched('v1', 'Service', '/api/v1/services'), kick);
    this.#slices = new Reflector(this.client, watched('discovery.k8s.io/v1', 'EndpointSlice', '/apis/discovery.k8s.io/v1/endpointslices'), kick);
    this.#namespaces = new Reflector(this.client, watched('v1', 'Namespace', '/api/v1/namespaces'), kick);
  }

  async start(): Promise<void> {
    mkdirSync(this.#o.paths.podLogs, { recursive: true });
    if (this.#o.cni) await this.#startCniAccess(this.#o.cni);
    for (const n of this.nodes) {
      this.#proxies.set(n.name, await prepareNode(this.#o.paths, n, this.#o.conflistFor(n)));
      await this.#registerNode(n);
    }
    this.#timers.push(setInterval(() => void this.#heartbeat(), HEARTBEAT_MS));
    // Readiness follows the processes (restarts, ports opening later).
    this.#timers.push(setInterval(() => void this.#refreshStatuses(), 500));
    for (const r of [this.#namespaces, this.#services, this.#slices, this.#pods]) r.start();
  }

  async #startCniAccess(o: { listenHost: string; caFile: string }): Promise<void> {
    const api = new URL(this.client.server);
    this.#relay = await startApiRelay(o.listenHost, { host: api.hostname, port: Number(api.port || 443) });
    this.#cniCredentials = new CniCredentials({
      client: this.client, dir: this.#o.paths.cni, server: this.#relay.url, caFile: o.caFile, tlsServerName: 'kubernetes.default.svc',
      apply: async (objects) => {
        const failed = (await this.apply(objects)).results.filter((r) => r.error);
        if (failed.length) throw new AmbitError('LOCAL_KUBE_CNI', `cannot create ambit-cni's RBAC: ${failed.map((r) => `${r.kind} ${r.name}: ${r.error}`).join('; ')}`);
      },
    });
    await this.#cniCredentials.start();
  }

  // ---------------------------------------------------------------- nodes

  #nodeStatus(n: NodeInfo): Record<string, unknown> {
    const now = new Date().toISOString();
    return {
      addresses: [{ type: 'InternalIP', address: n.ip }, { type: 'Hostname', address: n.name }],
      capacity: { cpu: '4', memory: '8Gi', pods: '110' },
      allocatable: { cpu: '4', memory: '8Gi', pods: '110' },
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'ambit local runtime is posting ready status', lastHeartbeatTime: now, lastTransitionTime: this.#readySince }],
      nodeInfo: { kubeletVersion: 'ambit-local', kubeProxyVersion: '', operatingSystem: 'linux', architecture: process.arch === 'x64' ? 'amd64' : process.arch, containerRuntimeVersion: 'ambit-local://1', kernelVersion: '', osImage: '', machineID: '', systemUUID: '', bootID: '' },
    };
  }

  #readySince = new Date().toISOString();

  async #registerNode(n: NodeInfo): Promise<void> {
    const node = {
      apiVersion: 'v1', kind: 'Node',
      metadata: { name: n.name, labels: { 'kubernetes.io/hostname': n.name, 'kubernetes.io/os': 'linux' }, annotations: { [NETNS_ANNOTATION]: n.netns } },
      spec: { podCIDR: n.podCidr, podCIDRs: [n.podCidr] },
    };
    let created: { metadata: { uid?: string } } | undefined;
    try {
      created = await this.client.request('POST', '/api/v1/nodes', node);
    } catch (err) {
      if (statusOf(err) !== 409) throw new AmbitError('LOCAL_KUBE_NODE', `cannot register node ${n.name} with the API server: ${errorMessage(err)}`, { cause: err });
    }
    await this.client.request('PATCH', `/api/v1/nodes/${n.name}/status`, { status: this.#nodeStatus(n) }, { contentType: MERGE_PATCH });
    const uid = created?.metadata.uid ?? (await this.client.request<{ metadata: { uid: string } }>('GET', `/api/v1/nodes/${n.name}`)).metadata.uid;
    await renewNodeLease(this.client, n.name, FIELD_MANAGER, uid);
    log.info('node registered', { node: n.name, podCIDR: n.podCidr });
  }

  /** kube-controller-manager marks a node whose status and lease stop moving NotReady and evicts its pods. */
  async #heartbeat(): Promise<void> {
    for (const n of this.nodes) {
      if (this.#stopped) return;
      await this.client.request('PATCH', `/api/v1/nodes/${n.name}/status`, { status: this.#nodeStatus(n) }, { contentType: MERGE_PATCH })
        .catch((err) => log.warn('node heartbeat failed', { node: n.name, error: errorMessage(err) }));
      await renewNodeLease(this.client, n.name, FIELD_MANAGER).catch((err) => log.warn('node lease renewal failed', { node: n.name, error: errorMessage(err) }));
    }
  }

  // ---------------------------------------------------------------- pods

  /** Reconcile after changes; a burst of watch events makes one pass. Slow work (start/stop) runs detached. */
  #kick(): void {
    if (this.#dirty || this.#stopped) return;
    this.#dirty = true;
    setImmediate(() => {
      this.#dirty = false;
      if (this.#stopped) return;
      try { this.#reconcile(); } catch (err) { log.error('reconcile failed', { error: errorMessage(err) }); }
    });
  }

  #reconcile(): void {
    if (!this.#pods.ready) return;
    const seen = new Set<string>();
    for (const p of this.#pods.objects() as Pod[]) {
      const uid = p.metadata.uid!;
      seen.add(uid);
      if (!p.spec.nodeName) {
        if (!p.metadata.deletionTimestamp && !this.#binding.has(uid)) void this.#bind(p);
        continue;
      }
      const node = this.nodes.find((n) => n.name === p.spec.nodeName);
      if (!node) continue;
      const r = this.#runners.get(uid);
      if (p.metadata.deletionTimestamp) {
        if (!this.#finishing.has(uid)) void this.#finish(uid, p, r);
        continue;
      }
      if (r) {
        // Labels and annotations may change; the spec cannot.
        r.pod = { ...r.pod, metadata: { ...p.metadata, annotations: { ...(p.metadata.annotations ?? {}), [NETNS_ANNOTATION]: r.pod.metadata.annotations?.[NETNS_ANNOTATION] ?? '' } } };
        continue;
      }
      if (p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed') continue;
      this.#startPod(p, node);
    }
    for (const [uid, r] of this.#runners) {
      if (!seen.has(uid) && !this.#finishing.has(uid)) void this.#finish(uid, undefined, r);
    }
    this.#syncProxies();
  }

  /** There is no kube-scheduler: unscheduled pods go round-robin over the nodes (pods/binding). */
  async #bind(p: Pod): Promise<void> {
    const uid = p.metadata.uid!;
    this.#binding.add(uid);
    const node = this.nodes[this.#rr++ % this.nodes.length];
    const ns = p.metadata.namespace!;
    try {
      await this.client.request('POST', `/api/v1/namespaces/${ns}/pods/${p.metadata.name}/binding`, {
        apiVersion: 'v1', kind: 'Binding', metadata: { name: p.metadata.name, namespace: ns, uid }, target: { apiVersion: 'v1', kind: 'Node', name: node.name },
      });
      log.info('pod bound', { pod: `${ns}/${p.metadata.name}`, node: node.name });
    } catch (err) {
      // 409: bound already (or gone and re-created): the watch shows what is true now.
      if (statusOf(err) !== 409 && statusOf(err) !== 404) log.warn('cannot bind pod', { pod: `${ns}/${p.metadata.name}`, error: errorMessage(err) });
    } finally {
      // Keep the mark a little, so the watch catches up before we would try again.
      setTimeout(() => this.#binding.delete(uid), 2000).unref();
    }
  }

  #startPod(p: Pod, node: NodeInfo): void {
    const uid = p.metadata.uid!;
    const netns = podNetnsName(this.#o.instance, uid);
    const pod: Pod = structuredClone(p);
    pod.metadata.annotations = { ...(pod.metadata.annotations ?? {}), [NETNS_ANNOTATION]: netns };
    const r = new PodRunner(pod, node);
    this.#runners.set(uid, r);
    r.starting = (async () => {
      try {
        validatePodSpec(`Pod ${r.key}`, pod.spec);
        r.sandbox = await createSandbox({
          uid, namespace: pod.metadata.namespace!, name: pod.metadata.name,
          node: node.name, nodeNetns: node.netns, netns,
          conflist: this.#o.conflistFor(node), binDirs: this.#binDirs,
          recordsDir: this.#o.paths.podRecords, ledger: this.#o.ledger,
        });
        if (r.phase === 'Terminating') return;
        r.startContainers((c) => this.#o.paths.podLog(pod.metadata.namespace!, pod.metadata.name, c));
        r.phase = 'Running';
        log.info('pod running', { pod: r.key, node: node.name, ip: r.podIP });
      } catch (err) {
        if (r.phase === 'Terminating') return;
        r.phase = 'Failed';
        r.message = errorMessage(err);
        log.warn('pod failed to start', { pod: r.key, error: r.message });
      }
      await this.#patchStatus(r);
    })();
  }

  /** The status as a kubelet reports it (phase, IPs, conditions, containerStatuses). */
  #statusOf(r: PodRunner): Record<string, unknown> {
    const st = r.status() as Record<string, unknown>;
    const ready = r.ready ? 'True' : 'False';
    st.conditions = [
      { type: 'PodScheduled', status: 'True' },
      { type: 'Initialized', status: 'True' },
      { type: 'ContainersReady', status: ready },
      { type: 'Ready', status: ready, ...(r.message ? { message: r.message } : {}) },
    ];
    if (r.phase === 'Failed') { st.phase = 'Failed'; st.reason = 'StartError'; }
    if (Array.isArray(st.containerStatuses)) {
      st.containerStatuses = (st.containerStatuses as Record<string, unknown>[]).map((c) => ({ ...c, imageID: '', containerID: `ambit://${r.pod.metadata.uid}/${String(c.name)}`, started: !!(c.state as { running?: unknown }).running }));
    }
    return st;
  }

  /**
   * One status PATCH at a time per pod, each computed when its turn comes: two in flight at once
   * (pod start and the 500 ms refresh) could land out of order and leave an older status on the
   * API server while #lastStatus holds the newer one, which would then never be sent again.
   */
  #patchStatus(r: PodRunner): Promise<void> {
    const uid = r.pod.metadata.uid!;
    const next = (this.#patching.get(uid) ?? Promise.resolve()).then(() => this.#patchStatusNow(r));
    this.#patching.set(uid, next);
    void next.finally(() => { if (this.#patching.get(uid) === next) this.#patching.delete(uid); });
    return next;
  }

  async #patchStatusNow(r: PodRunner): Promise<void> {
    if (this.#stopped) return;
    const status = this.#statusOf(r);
    const text = JSON.stringify(status);
    const uid = r.pod.metadata.uid!;
    if (this.#lastStatus.get(uid) === text) return;
    try {
      await this.client.request('PATCH', `/api/v1/namespaces/${r.pod.metadata.namespace}/pods/${r.pod.metadata.name}/status`,
        { metadata: { uid }, status }, { contentType: MERGE_PATCH });
      this.#lastStatus.set(uid, text);
    } catch (err) {
      if (statusOf(err) !== 404 && statusOf(err) !== 409) log.warn('cannot patch pod status', { pod: r.key, error: errorMessage(err) });
    }
  }

  async #refreshStatuses(): Promise<void> {
    for (const r of this.#runners.values()) {
      if (r.phase !== 'Running') continue;
      const ready = r.checkReady();
      r.ready = ready;
      r.message = ready ? undefined : r.crashInfo();
      await this.#patchStatus(r);
    }
  }

  /** Terminating: out of the endpoints, processes stopped within the grace period, sandbox gone, then the object. */
  async #finish(uid: string, p: Pod | undefined, r: PodRunner | undefined): Promise<void> {
    this.#finishing.add(uid);
    const key = p ? `${p.metadata.namespace}/${p.metadata.name}` : r?.key;
    try {
      if (r) {
        r.phase = 'Terminating';
        r.ready = false;
        await this.#patchStatus(r);
        await r.starting;
        const graceMs = Math.max(1, (p?.metadata as { deletionGracePeriodSeconds?: number } | undefined)?.deletionGracePeriodSeconds ?? 30) * 1000;
        await Promise.all(r.containers.map((c) => c.stop(graceMs).catch((err) => log.warn('cannot stop container', { pod: r.key, error: errorMessage(err) }))));
        if (r.sandbox) await destroySandbox(r.sandbox, this.#o.paths.podRecords, this.#o.ledger);
        this.#runners.delete(uid);
        this.#lastStatus.delete(uid);
      }
      if (p && !this.#stopped) {
        await this.client.request('DELETE', `/api/v1/namespaces/${p.metadata.namespace}/pods/${p.metadata.name}`,
          { apiVersion: 'v1', kind: 'DeleteOptions', gracePeriodSeconds: 0, preconditions: { uid } })
          .catch((err) => { if (statusOf(err) !== 404 && statusOf(err) !== 409) throw err; });
      }
      log.info('pod deleted', { pod: key });
    } catch (err) {
      log.warn('cannot finish pod deletion', { pod: key, error: errorMessage(err) });
    } finally {
      this.#finishing.delete(uid);
      this.#syncProxies();
    }
  }

  // ---------------------------------------------------------------- services

  #proxyServices(): ProxyService[] {
    const slices = this.#slices.objects() as EndpointSlice[];
    const out: ProxyService[] = [];
    for (const s of this.#services.objects() as Service[]) {
      const ip = s.spec.clusterIP;
      if (!ip || ip === 'None') continue;
      const mine = slices.filter((sl) => sl.metadata.namespace === s.metadata.namespace && sl.metadata.labels?.['kubernetes.io/service-name'] === s.metadata.name);
      out.push({
        key: `${s.metadata.namespace}/${s.metadata.name}`,
        clusterIP: ip,
        ports: (s.spec.ports ?? []).map((sp) => {
          const proto = sp.protocol ?? 'TCP';
          const eps = new Map<string, ProxyEndpoint>();
          for (const sl of mine) {
            const port = sl.ports?.find((x) => (x.name ?? '') === (sp.name ?? '') && (x.protocol ?? 'TCP') === proto)?.port;
            if (!port) continue;
            for (const e of sl.endpoints ?? []) {
              if (e.conditions?.ready === false) continue;
              for (const a of e.addresses ?? []) eps.set(`${a}:${port}`, { ip: a, port });
            }
          }
          return { port: sp.port, protocol: proto, endpoints: [...eps.values()] };
        }),
      });
    }
    return out;
  }

  #syncProxies(): void {
    if (!this.#services.ready || !this.#slices.ready) return;
    const services = this.#proxyServices();
    for (const kp of this.#proxies.values()) void kp.sync(services);
  }

  async settle(): Promise<void> {
    if (!this.#services.ready || !this.#slices.ready) return;
    const services = this.#proxyServices();
    await Promise.all([...this.#proxies.values()].map((kp) => kp.sync(services)));
  }

  // ---------------------------------------------------------------- the `ambit local` commands

  /** Runner of a pod by namespace/name (exec, logs). */
  pod(namespace: string, name: string): PodRunner | undefined {
    return [...this.#runners.values()].find((r) => r.pod.metadata.namespace === namespace && r.pod.metadata.name === name && r.phase !== 'Terminating');
  }

  podCount(node: string): number {
    return [...this.#runners.values()].filter((r) => r.node.name === node && r.phase !== 'Failed').length;
  }

  async #resource(apiVersion: string, kind: string): Promise<{ base: string; r: ApiResource }> {
    const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
    let list = this.#resources.get(base);
    if (!list) {
      try {
        list = (await this.client.request<{ resources: ApiResource[] }>('GET', base)).resources;
      } catch (err) {
        if (statusOf(err) === 404) throw new AmbitError('LOCAL_UNSUPPORTED_KIND', `${apiVersion} is not served by the API server (CRD not installed?)`);
        throw err;
      }
      this.#resources.set(base, list);
    }
    const r = list.find((x) => x.kind === kind && !x.name.includes('/'));
    if (!r) throw new AmbitError('LOCAL_UNSUPPORTED_KIND', `${apiVersion} has no kind ${kind} on the API server`);
    return { base, r };
  }

  async #path(obj: KubeObject): Promise<{ path: string; namespace?: string }> {
    const { base, r } = await this.#resource(obj.apiVersion, obj.kind);
    const namespace = r.namespaced ? (obj.metadata.namespace ?? 'default') : undefined;
    return { path: `${base}${namespace ? `/namespaces/${encodeURIComponent(namespace)}` : ''}/${r.name}/${encodeURIComponent(obj.metadata.name)}`, namespace };
  }

  /** Server-side apply, in dependency order; waits for the applied pods and deployments to be ready. */
  async apply(objects: KubeObject[], waitMs = 90_000): Promise<ApplyOutcome> {
    const results: ObjectResult[] = [];
    const waits: { kind: string; namespace: string; name: string; uid?: string }[] = [];
    const sorted = objects.map((o, i) => ({ o, i })).sort((a, b) => applyRank(a.o.kind) - applyRank(b.o.kind) || a.i - b.i).map((x) => x.o);
    for (const obj of sorted) {
      const r: ObjectResult = { kind: obj.kind, name: obj.metadata.name };
      try {
        const { path, namespace } = await this.#path(obj);
        r.namespace = namespace;
        const body = structuredClone(obj);
        if (namespace) body.metadata.namespace = namespace;
        delete body.status;
        const before = await this.client.request<KubeObject>('GET', path).catch((err) => { if (statusOf(err) === 404) return undefined; throw err; });
        const after = await this.client.request<KubeObject>('PATCH', `${path}?fieldManager=${FIELD_MANAGER}&force=true`, body, { contentType: 'application/apply-patch+yaml' });
        r.action = !before ? 'created' : sameContent(before, after) ? 'unchanged' : 'configured';
        if ((obj.kind === 'Pod' || obj.kind === 'Deployment') && namespace) waits.push({ kind: obj.kind, namespace, name: obj.metadata.name, uid: after.metadata.uid });
      } catch (err) {
        r.error = errorMessage(err);
        r.code = err instanceof AmbitError ? err.code : 'LOCAL_APPLY';
      }
      results.push(r);
    }
    const podFailures: ApplyOutcome['podFailures'] = [];
    const deadline = Date.now() + waitMs;
    for (const w of waits) {
      const what = `${w.namespace}/${w.name}`;
      for (;;) {
        const state = w.kind === 'Pod' ? this.#podState(w.uid!) : await this.#deploymentState(w.namespace, w.name);
        if (state === 'ready') break;
        if (state !== 'waiting') { podFailures.push({ pod: what, message: state }); break; }
        if (Date.now() > deadline) { podFailures.push({ pod: what, message: `not ready after ${waitMs / 1000}s` }); break; }
        await new Promise((res) => setTimeout(res, 200));
      }
    }
    return { results, podFailures };
  }

  #podState(uid: string): string {
    const r = this.#runners.get(uid);
    if (!r) return 'waiting';
    if (r.phase === 'Failed') return r.message ?? 'failed';
    if (r.phase === 'Running' && r.ready && this.#lastStatus.get(uid)?.includes('"Ready","status":"True"')) return 'ready';
    return 'waiting';
  }

  async #deploymentState(ns: string, name: string): Promise<string> {
    const d = await this.client.request<Deployment & { status?: { observedGeneration?: number; updatedReplicas?: number; readyReplicas?: number; replicas?: number } }>('GET', `/apis/apps/v1/namespaces/${ns}/deployments/${name}`).catch(() => undefined);
    if (!d) return 'waiting';
    const want = d.spec.replicas ?? 1;
    const st = d.status ?? {};
    const done = (st.observedGeneration ?? 0) >= (d.metadata.generation ?? 1) && (st.updatedReplicas ?? 0) === want && (st.readyReplicas ?? 0) === want && (st.replicas ?? 0) === want;
    if (done) return 'ready';
    const failed = [...this.#runners.values()].find((r) => r.phase === 'Failed' && r.pod.metadata.namespace === ns && r.pod.metadata.name.startsWith(`${name}-`));
    return failed ? `pod ${failed.key}: ${failed.message ?? 'failed'}` : 'waiting';
  }

  async delete(objects: KubeObject[]): Promise<ObjectResult[]> {
    const out: ObjectResult[] = [];
    const sorted = [...objects].sort((a, b) => applyRank(b.kind) - applyRank(a.kind));
    for (const obj of sorted) {
      const r: ObjectResult = { kind: obj.kind, name: obj.metadata.name };
      try {
        const { path, namespace } = await this.#path(obj);
        r.namespace = namespace;
        await this.client.request('DELETE', path, { apiVersion: 'v1', kind: 'DeleteOptions', propagationPolicy: 'Background' }).catch((err) => {
          if (statusOf(err) === 404) throw new AmbitError('LOCAL_NOT_FOUND', `${obj.kind} ${namespace ? `${namespace}/` : ''}${obj.metadata.name} not found`);
          throw err;
        });
        // A pod is gone once its processes stopped (as in the default mode).
        if (obj.kind === 'Pod') {
          const deadline = Date.now() + 60_000;
          while (Date.now() < deadline && await this.client.request('GET', path).then(() => true, () => false)) await new Promise((res) => setTimeout(res, 200));
        }
        r.action = 'deleted';
      } catch (err) {
        r.error = errorMessage(err);
        r.code = err instanceof AmbitError ? err.code : 'LOCAL_DELETE';
      }
      out.push(r);
    }
    return out;
  }

  /** Objects of a kind from the API server, with apiVersion/kind set (list items lack them). */
  async get(kind: string, namespace: string | undefined): Promise<KubeObject[]> {
    const where: Record<string, [string, string, boolean]> = {
      Node: ['v1', 'nodes', false], Pod: ['v1', 'pods', true], Service: ['v1', 'services', true],
      Deployment: ['apps/v1', 'deployments', true], Namespace: ['v1', 'namespaces', false],
    };
    const w = where[kind];
    if (!w) throw new AmbitError('LOCAL_USAGE', `get: kind ${kind} is not listed by the local mesh; use kubectl`);
    const base = w[0].includes('/') ? `/apis/${w[0]}` : `/api/${w[0]}`;
    const path = `${base}${w[2] && namespace ? `/namespaces/${encodeURIComponent(namespace)}` : ''}/${w[1]}`;
    const list = await this.client.request<{ items: KubeObject[] }>('GET', path);
    const items = list.items.map((o) => ({ ...o, apiVersion: w[0], kind }));
    if (kind === 'Node') for (const n of items) n.status = { ...(n.status as object), pods: this.podCount(n.metadata.name) };
    return items.sort((a, b) => `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`));
  }

  // ---------------------------------------------------------------- shutdown

  /** Stop every pod (processes, CNI DEL, netns) and the watches; the API objects stay. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const t of this.#timers) clearInterval(t);
    this.#cniCredentials?.stop();
    await Promise.all([this.#pods, this.#services, this.#slices, this.#namespaces].map((r) => r.stop().catch(() => undefined)));
    await Promise.all([...this.#runners.entries()].map(async ([uid, r]) => {
      r.phase = 'Terminating';
      await r.starting;
      await r.stopContainers();
      if (r.sandbox) await destroySandbox(r.sandbox, this.#o.paths.podRecords, this.#o.ledger).catch((err) => log.warn('cannot remove pod sandbox', { pod: r.key, error: errorMessage(err) }));
      this.#runners.delete(uid);
    }));
    // After the pods: their CNI DEL may still read from the API server.
    await this.#relay?.close();
  }
}
