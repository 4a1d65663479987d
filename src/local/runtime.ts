/**
 * The local "API server + kubelets + kube-proxy": accepts objects (apply/delete), keeps them in the
 * ObjectStore, schedules pods onto nodes, runs them (sandbox + processes), keeps deployments at their
 * replica count and programs each node's service rules. Knows nothing about the mesh agents: with the
 * mesh on, the only difference is the conflist (ambit-cni chained) it was given.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Deployment, KubeObject, Namespace, Pod, Service } from '../api/k8s.ts';
import { ObjectStore } from '../api/object-store.ts';
import { AmbitError, errorMessage } from '../shared/errors.ts';
import { logger } from '../shared/log.ts';
import type { CniConflist } from './cni-exec.ts';
import { CNI_BIN_DIR, PACKAGE_ROOT, podNetnsName, type NodeInfo, type Paths } from './instance.ts';
import { KubeProxy, type ProxyService } from './kube-proxy.ts';
import type { Ledger } from './ledger.ts';
import {
  allocateClusterIP, applyRank, bad, checkName, isNamespaced, kindSupport, matches, randomSuffix,
  resolveTargetPort, templateHash, validateDeployment, validatePodSpec, validatePolicy, validateService,
} from './objects.ts';
import { PodRunner } from './pod-runner.ts';
import { prepareNode } from './node-setup.ts';
import { createSandbox, destroySandbox } from './sandbox.ts';

const log = logger('local.runtime');
export const NETNS_ANNOTATION = 'local.ambit.dev/netns';

export interface ObjectResult {
  kind: string; namespace?: string; name: string; action?: 'created' | 'configured' | 'unchanged' | 'deleted' | 'stored'; error?: string; code?: string;
  /** Accepted, but not enforced exactly as written (policies). */
  warnings?: string[];
}
export interface ApplyOutcome { results: ObjectResult[]; podFailures: { pod: string; message: string }[] }

export interface RuntimeOptions {
  instance: string;
  paths: Paths;
  nodes: NodeInfo[];
  ledger: Ledger;
  /** Conflist for a node's pods (the mesh decides whether ambit-cni is chained). */
  conflistFor: (node: NodeInfo) => CniConflist;
}

const okey = (kind: string, ns: string | undefined, name: string) => `${kind}/${isNamespaced(kind) ? (ns ?? 'default') : ''}/${name}`;

export class LocalRuntime {
  readonly store: ObjectStore;
  readonly nodes: NodeInfo[];
  #o: RuntimeOptions;
  #objects = new Map<string, KubeObject>();
  #pods = new Map<string, PodRunner>();
  #proxies = new Map<string, KubeProxy>();
  #lock: Promise<unknown> = Promise.resolve();
  #readyTimer: NodeJS.Timeout | undefined;
  #binDirs = [CNI_BIN_DIR, join(PACKAGE_ROOT, 'bin')];

  constructor(o: RuntimeOptions) {
    this.#o = o;
    this.nodes = o.nodes;
    this.store = new ObjectStore(o.paths.objects);
  }

  async start(): Promise<void> {
    mkdirSync(this.#o.paths.podLogs, { recursive: true });
    for (const n of this.nodes) {
      this.#proxies.set(n.name, await prepareNode(this.#o.paths, n, this.#o.conflistFor(n)));
      await this.store.put({
        apiVersion: 'v1', kind: 'Node',
        metadata: { name: n.name, uid: randomUUID(), labels: { 'kubernetes.io/hostname': n.name }, annotations: { [NETNS_ANNOTATION]: n.netns }, creationTimestamp: new Date().toISOString() },
        spec: { podCIDR: n.podCidr, podCIDRs: [n.podCidr] },
        status: { addresses: [{ type: 'InternalIP', address: n.ip }, { type: 'Hostname', address: n.name }], conditions: [{ type: 'Ready', status: 'True' }] },
      });
    }
    await this.#put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'default', uid: randomUUID(), creationTimestamp: new Date().toISOString() } });
    // Readiness follows the processes (restarts, ports opening later).
    this.#readyTimer = setInterval(() => void this.#refreshReadiness(), 500);
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#lock.then(fn, fn);
    this.#lock = next.catch(() => undefined);
    return next;
  }

  /** Writes of one object are serialized (the store's temp file name is per process, not per write). */
  #writes = new Map<string, Promise<void>>();
  #queueWrite(key: string, fn: () => Promise<unknown>): Promise<void> {
    const prev = this.#writes.get(key) ?? Promise.resolve();
    const next = prev.then(async () => { await fn(); });
    const settled = next.catch(() => undefined);
    this.#writes.set(key, settled);
    void settled.then(() => { if (this.#writes.get(key) === settled) this.#writes.delete(key); });
    return next;
  }

  async #put(obj: KubeObject): Promise<void> {
    const key = okey(obj.kind, obj.metadata.namespace, obj.metadata.name);
    this.#objects.set(key, obj);
    const snapshot = structuredClone(obj);
    await this.#queueWrite(key, () => this.store.put(snapshot));
  }

  async #remove(obj: KubeObject): Promise<void> {
    const key = okey(obj.kind, obj.metadata.namespace, obj.metadata.name);
    this.#objects.delete(key);
    await this.#queueWrite(key, () => this.store.delete(obj.kind, obj.metadata.namespace, obj.metadata.name));
  }

  list(kind: string, namespace?: string): KubeObject[] {
    return [...this.#objects.values()].filter((o) => o.kind === kind && (namespace === undefined || o.metadata.namespace === namespace))
      .sort((a, b) => `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`));
  }

  pod(namespace: string, name: string): PodRunner | undefined { return this.#pods.get(`${namespace}/${name}`); }
  podCount(node: string): number { return [...this.#pods.values()].filter((p) => p.node.name === node && p.phase !== 'Failed').length; }

  // ---------------------------------------------------------------- apply

  /** Apply objects in dependency order; returns once the pods it started run (or failed). */
  async apply(objects: KubeObject[], waitMs = 90_000): Promise<ApplyOutcome> {
    const started: PodRunner[] = [];
    const results = await this.#serial(async () => {
      const out: ObjectResult[] = [];
      const sorted = objects.map((o, i) => ({ o, i })).sort((a, b) => applyRank(a.o.kind) - applyRank(b.o.kind) || a.i - b.i).map((x) => x.o);
      for (const obj of sorted) {
        const r: ObjectResult = { kind: obj.kind, namespace: isNamespaced(obj.kind) ? (obj.metadata.namespace ?? 'default') : undefined, name: obj.metadata.name };
        try {
          r.action = await this.#applyOne(obj, started, (w) => { if (w.length > 0) r.warnings = w; });
        } catch (err) {
          r.error = errorMessage(err);
          r.code = err instanceof AmbitError ? err.code : 'LOCAL_APPLY';
        }
        out.push(r);
      }
      return out;
    });
    return { results, podFailures: await this.#waitPods(started, waitMs) };
  }

  async #waitPods(pods: PodRunner[], waitMs: number): Promise<{ pod: string; message: string }[]> {
    const deadline = Date.now() + waitMs;
    const failures: { pod: string; message: string }[] = [];
    for (const p of pods) {
      while (true) {
        if (p.phase === 'Failed') { failures.push({ pod: p.key, message: p.message ?? 'failed' }); break; }
        if (p.phase === 'Terminating') break;
        if (p.phase === 'Running' && p.ready) break;
        const crash = p.phase === 'Running' ? p.crashInfo() : undefined;
        if (crash && p.containers.some((c) => c.restarts >= 1)) { failures.push({ pod: p.key, message: crash }); break; }
        if (Date.now() > deadline) { failures.push({ pod: p.key, message: `not ready after ${waitMs / 1000}s (${p.phase}${crash ? `; ${crash}` : ''})` }); break; }
        await new Promise((r) => setTimeout(r, 100));
        if (p.phase === 'Running') await this.#refreshReadiness();
      }
    }
    return failures;
  }

  async #applyOne(obj: KubeObject, started: PodRunner[], warn: (warnings: string[]) => void): Promise<ObjectResult['action']> {
    const support = kindSupport(obj);
    if (!support) {
      throw new AmbitError('LOCAL_UNSUPPORTED_KIND', `${obj.apiVersion} ${obj.kind} is not supported by the local mesh (supported: Namespace, Pod, Deployment, Service, ServiceAccount, and the Istio/Gateway API kinds, which are stored for the controller)`);
    }
    const ns = isNamespaced(obj.kind) ? (obj.metadata.namespace ?? 'default') : undefined;
    const what = `${obj.kind} ${ns ? `${ns}/` : ''}${obj.metadata.name}`;
    checkName(what, 'metadata.name', obj.metadata.name);
    if (ns !== undefined && !this.#objects.has(okey('Namespace', undefined, ns))) {
      throw new AmbitError('LOCAL_NO_NAMESPACE', `${what}: namespace "${ns}" does not exist; apply a Namespace first`);
    }
    const prev = this.#objects.get(okey(obj.kind, ns, obj.metadata.name));
    const obj2: KubeObject = structuredClone(obj);
    obj2.metadata = { ...obj2.metadata, ...(ns !== undefined ? { namespace: ns } : {}) };
    obj2.metadata.uid = prev?.metadata.uid ?? randomUUID();
    obj2.metadata.creationTimestamp = prev?.metadata.creationTimestamp ?? new Date().toISOString();
    delete obj2.metadata.resourceVersion;
    delete obj2.status;
    switch (obj.kind) {
      case 'Namespace': return this.#applyPlain(obj2, prev);
      case 'Service': return this.#applyService(obj2 as Service, prev as Service | undefined);
      case 'Deployment': return this.#applyDeployment(obj2 as Deployment, prev as Deployment | undefined, started);
      case 'Pod': return this.#applyPod(obj2 as Pod, prev as Pod | undefined, started);
      default: {
        warn(validatePolicy(obj2));
        const a = await this.#applyPlain(obj2, prev);
        return a === 'created' ? 'stored' : a;
      }
    }
  }

  async #applyPlain(obj: KubeObject, prev: KubeObject | undefined): Promise<ObjectResult['action']> {
    if (prev && JSON.stringify({ ...prev, status: undefined }) === JSON.stringify({ ...obj, status: undefined })) return 'unchanged';
    await this.#put(obj);
    if (obj.kind === 'Namespace') this.#syncProxies();
    return prev ? 'configured' : 'created';
  }

  async #applyService(svc: Service, prev: Service | undefined): Promise<ObjectResult['action']> {
    validateService(svc);
    const what = `Service ${svc.metadata.namespace}/${svc.metadata.name}`;
    const want = svc.spec.clusterIP;
    const had = prev?.spec.clusterIP;
    if (had && want && want !== had) throw bad(what, `spec.clusterIP is immutable (${had}); delete the service to change it`);
    if (!want) {
      const used = new Set(this.list('Service').map((s) => (s as Service).spec.clusterIP).filter((x): x is string => !!x));
      svc.spec.clusterIP = had ?? allocateClusterIP(used);
    } else if (want !== 'None' && !had) {
      const clash = this.list('Service').find((s) => (s as Service).spec.clusterIP === want);
      if (clash) throw bad(what, `spec.clusterIP ${want} is already used by service ${clash.metadata.namespace}/${clash.metadata.name}`);
    }
    svc.spec.clusterIPs = [svc.spec.clusterIP!];
    svc.spec.type = svc.spec.type ?? 'ClusterIP';
    svc.spec.ports = (svc.spec.ports ?? []).map((p) => ({ ...p, protocol: p.protocol ?? 'TCP', targetPort: p.targetPort ?? p.port }));
    const action = await this.#applyPlain(svc, prev);
    this.#syncProxies();
    return action;
  }

  async #applyDeployment(d: Deployment, prev: Deployment | undefined, started: PodRunner[]): Promise<ObjectResult['action']> {
    validateDeployment(d);
    d.metadata.generation = (prev?.metadata.generation ?? 0) + (prev && JSON.stringify(prev.spec) === JSON.stringify(d.spec) ? 0 : 1);
    const action = await this.#applyPlain(d, prev);
    await this.#reconcileDeployment(d, started);
    return action;
  }

  /** Keep `replicas` pods of the current template; pods of an older template are replaced. */
  async #reconcileDeployment(d: Deployment, started: PodRunner[]): Promise<void> {
    const hash = templateHash(d);
    const owned = [...this.#pods.values()].filter((p) => p.pod.metadata.ownerReferences?.some((r) => r.uid === d.metadata.uid) && p.phase !== 'Terminating');
    const stale = owned.filter((p) => p.pod.metadata.labels?.['pod-template-hash'] !== hash);
    const current = owned.filter((p) => !stale.includes(p));
    const want = d.spec.replicas ?? 1;
    const extra = current.sort((a, b) => (b.pod.metadata.creationTimestamp ?? '').localeCompare(a.pod.metadata.creationTimestamp ?? '')).slice(0, Math.max(0, current.length - want));
    const fresh: PodRunner[] = [];
    for (let i = current.length - extra.length; i < want; i++) {
      const tpl = d.spec.template;
      const pod: Pod = {
        apiVersion: 'v1', kind: 'Pod',
        metadata: {
          name: this.#freePodName(d.metadata.namespace!, d.metadata.name),
          namespace: d.metadata.namespace,
          labels: { ...(tpl.metadata?.labels ?? {}), 'pod-template-hash': hash },
          ...(tpl.metadata?.annotations ? { annotations: { ...tpl.metadata.annotations } } : {}),
          ownerReferences: [{ apiVersion: 'apps/v1', kind: 'Deployment', name: d.metadata.name, uid: d.metadata.uid!, controller: true }],
          uid: randomUUID(),
          creationTimestamp: new Date().toISOString(),
        },
        spec: structuredClone(tpl.spec),
      };
      const before = started.length;
      await this.#applyPod(pod, undefined, started);
      fresh.push(...started.slice(before));
    }
    await Promise.all(extra.map((p) => this.#deletePod(p)));
    if (stale.length === 0) return;
    // A small rolling update: the old pods go once the new ones are ready (or failed).
    void this.#waitPods(fresh, 90_000).then(() => this.#serial(async () => {
      await Promise.all(stale.map((p) => this.#deletePod(p)));
    })).catch((err) => log.warn('cannot remove old pods', { deployment: d.metadata.name, error: errorMessage(err) }));
  }

  #freePodName(ns: string, base: string): string {
    for (;;) {
      const name = `${base}-${randomSuffix()}`;
      if (!this.#pods.has(`${ns}/${name}`)) return name;
    }
  }

  #schedule(pod: Pod): PodRunner['node'] {
    const what = `Pod ${pod.metadata.namespace}/${pod.metadata.name}`;
    if (pod.spec.nodeName) {
      const n = this.nodes.find((x) => x.name === pod.spec.nodeName);
      if (!n) throw bad(what, `spec.nodeName "${pod.spec.nodeName}" is not a node (nodes: ${this.nodes.map((x) => x.name).join(', ')})`);
      return n;
    }
    return [...this.nodes].sort((a, b) => this.podCount(a.name) - this.podCount(b.name) || a.index - b.index)[0];
  }

  async #applyPod(pod: Pod, prev: Pod | undefined, started: PodRunner[]): Promise<ObjectResult['action']> {
    const key = `${pod.metadata.namespace}/${pod.metadata.name}`;
    validatePodSpec(`Pod ${key}`, pod.spec);
    const running = this.#pods.get(key);
    if (prev && running) {
      const norm = (sp: Pod['spec']) => { const { nodeName: _n, ...rest } = sp; return { ...rest, serviceAccountName: sp.serviceAccountName ?? 'default', restartPolicy: sp.restartPolicy ?? 'Always' }; };
      const a = norm(prev.spec);
      const b = norm(pod.spec);
      if (JSON.stringify(a) !== JSON.stringify(b)) throw bad(`Pod ${key}`, 'a pod spec cannot be changed; delete the pod and apply it again (or use a Deployment)');
      if (running.phase === 'Failed') throw bad(`Pod ${key}`, `the pod failed (${running.message}); delete it and apply again`);
      // Labels may change on a running pod (as in Kubernetes): e.g. istio.io/dataplane-mode, which
      // enrolls or releases it at run time without a restart.
      const labels = pod.metadata.labels ?? {};
      if (JSON.stringify(running.pod.metadata.labels ?? {}) === JSON.stringify(labels)) return 'unchanged';
      running.pod.metadata.labels = { ...labels };
      await this.#put(running.pod);
      this.#syncProxies();
      return 'configured';
    }
    const node = this.#schedule(pod);
    pod.spec.nodeName = node.name;
    pod.spec.serviceAccountName = pod.spec.serviceAccountName ?? 'default';
    pod.spec.restartPolicy = pod.spec.restartPolicy ?? 'Always';
    const netns = podNetnsName(this.#o.instance, pod.metadata.uid!);
    pod.metadata.annotations = { ...(pod.metadata.annotations ?? {}), [NETNS_ANNOTATION]: netns };
    pod.status = { phase: 'Pending', hostIP: node.ip, conditions: [{ type: 'PodScheduled', status: 'True' }, { type: 'Ready', status: 'False' }] };
    const runner = new PodRunner(pod, node);
    this.#pods.set(key, runner);
    // The CNI plugin reads the pod (labels, service account) during ADD: it must be stored first.
    await this.#put(pod);
    started.push(runner);
    runner.starting = this.#startPod(runner, netns);
    return 'created';
  }

  async #startPod(r: PodRunner, netns: string): Promise<void> {
    const pod = r.pod;
    try {
      r.sandbox = await createSandbox({
        uid: pod.metadata.uid!, namespace: pod.metadata.namespace!, name: pod.metadata.name,
        node: r.node.name, nodeNetns: r.node.netns, netns,
        conflist: this.#o.conflistFor(r.node), binDirs: this.#binDirs,
        recordsDir: this.#o.paths.podRecords, ledger: this.#o.ledger,
      });
      if (r.phase === 'Terminating') return;
      r.startContainers((c) => this.#o.paths.podLog(pod.metadata.namespace!, pod.metadata.name, c));
      r.phase = 'Running';
      log.info('pod running', { pod: r.key, node: r.node.name, ip: r.podIP });
    } catch (err) {
      r.phase = 'Failed';
      r.message = errorMessage(err);
      r.sandbox = undefined;
      log.warn('pod failed to start', { pod: r.key, error: r.message });
    }
    await this.#writeStatus(r).catch((err) => log.error('cannot write pod status', { pod: r.key, error: errorMessage(err) }));
  }

  async #writeStatus(r: PodRunner): Promise<void> {
    if (!this.#pods.has(r.key) && r.phase !== 'Terminating') return;
    r.pod.status = r.status();
    if (r.phase === 'Terminating') r.pod.metadata.deletionTimestamp ??= new Date().toISOString();
    await this.#put(r.pod);
  }

  async #refreshReadiness(): Promise<void> {
    let changed = false;
    for (const r of this.#pods.values()) {
      if (r.phase !== 'Running') continue;
      const ready = r.checkReady();
      const msg = ready ? undefined : r.crashInfo();
      if (ready !== r.ready || msg !== r.message) {
        r.ready = ready;
        r.message = msg;
        changed = true;
        await this.#writeStatus(r).catch((err) => log.warn('cannot write pod status', { pod: r.key, error: errorMessage(err) }));
      }
    }
    if (changed) this.#syncProxies();
  }

  // ---------------------------------------------------------------- delete

  async delete(objects: KubeObject[]): Promise<ObjectResult[]> {
    return this.#serial(async () => {
      const out: ObjectResult[] = [];
      const sorted = [...objects].sort((a, b) => applyRank(b.kind) - applyRank(a.kind));
      for (const obj of sorted) {
        const ns = isNamespaced(obj.kind) ? (obj.metadata.namespace ?? 'default') : undefined;
        const r: ObjectResult = { kind: obj.kind, namespace: ns, name: obj.metadata.name };
        try {
          r.action = await this.#deleteOne(obj.kind, ns, obj.metadata.name);
        } catch (err) {
          r.error = errorMessage(err);
          r.code = err instanceof AmbitError ? err.code : 'LOCAL_DELETE';
        }
        out.push(r);
      }
      return out;
    });
  }

  async #deleteOne(kind: string, ns: string | undefined, name: string): Promise<'deleted'> {
    const obj = this.#objects.get(okey(kind, ns, name));
    if (!obj) throw new AmbitError('LOCAL_NOT_FOUND', `${kind} ${ns ? `${ns}/` : ''}${name} not found`);
    if (kind === 'Pod') {
      const r = this.#pods.get(`${ns}/${name}`);
      if (r) await this.#deletePod(r);
      else await this.#remove(obj);
      // Like a ReplicaSet: a deleted pod of a deployment is replaced.
      const owner = obj.metadata.ownerReferences?.find((o) => o.kind === 'Deployment');
      const d = owner && this.#objects.get(okey('Deployment', ns, owner.name));
      if (d && d.metadata.uid === owner.uid) await this.#reconcileDeployment(d as Deployment, []);
    } else if (kind === 'Deployment') {
      await this.#remove(obj);
      const owned = [...this.#pods.values()].filter((p) => p.pod.metadata.ownerReferences?.some((o) => o.uid === obj.metadata.uid));
      await Promise.all(owned.map((p) => this.#deletePod(p)));
    } else if (kind === 'Namespace') {
      if (name === 'default') throw new AmbitError('LOCAL_FORBIDDEN', 'namespace default cannot be deleted');
      const inside = [...this.#objects.values()].filter((o) => o.metadata.namespace === name);
      for (const o of inside.filter((x) => x.kind === 'Deployment')) await this.#remove(o);
      await Promise.all([...this.#pods.values()].filter((p) => p.pod.metadata.namespace === name).map((p) => this.#deletePod(p)));
      for (const o of inside.filter((x) => x.kind !== 'Deployment' && x.kind !== 'Pod')) await this.#remove(o);
      await this.#remove(obj);
    } else {
      await this.#remove(obj);
    }
    this.#syncProxies();
    return 'deleted';
  }

  /** Terminating (not ready, out of the endpoints) -> stop processes -> CNI DEL -> gone. */
  async #deletePod(r: PodRunner): Promise<void> {
    if (r.phase === 'Terminating' && !this.#pods.has(r.key)) return;
    this.#pods.delete(r.key);
    r.phase = 'Terminating';
    r.ready = false;
    await this.#writeStatus(r).catch(() => undefined);
    this.#syncProxies();
    // The sandbox may still be being created: let that finish (it sees Terminating and stops there).
    await r.starting;
    await r.stopContainers();
    if (r.sandbox) await destroySandbox(r.sandbox, this.#o.paths.podRecords, this.#o.ledger);
    await this.#remove(r.pod);
    log.info('pod deleted', { pod: r.key });
  }

  // ---------------------------------------------------------------- services

  #proxyServices(): ProxyService[] {
    const out: ProxyService[] = [];
    for (const s of this.list('Service') as Service[]) {
      const ip = s.spec.clusterIP;
      if (!ip || ip === 'None' || !s.spec.selector) continue;
      const pods = [...this.#pods.values()].filter((p) => p.ready && p.podIP && p.pod.metadata.namespace === s.metadata.namespace && matches(s.spec.selector, p.pod.metadata.labels));
      out.push({
        key: `${s.metadata.namespace}/${s.metadata.name}`,
        clusterIP: ip,
        ports: (s.spec.ports ?? []).map((sp) => ({
          port: sp.port,
          protocol: sp.protocol ?? 'TCP',
          endpoints: pods.flatMap((p) => { const tp = resolveTargetPort(sp, p.pod); return tp ? [{ ip: p.podIP!, port: tp }] : []; }),
        })),
      });
    }
    return out;
  }

  #syncProxies(): void {
    const services = this.#proxyServices();
    for (const kp of this.#proxies.values()) void kp.sync(services);
  }

  /** Wait for the service rules to be programmed (tests, apply). */
  async settle(): Promise<void> {
    const services = this.#proxyServices();
    await Promise.all([...this.#proxies.values()].map((kp) => kp.sync(services)));
  }

  // ---------------------------------------------------------------- shutdown

  /** Stop every pod (processes, CNI DEL, netns). The node network stays (the caller removes it). */
  async stop(): Promise<void> {
    clearInterval(this.#readyTimer);
    await this.#serial(async () => {
      await Promise.all([...this.#pods.values()].map((p) => this.#deletePod(p).catch((err) => log.warn('cannot delete pod', { pod: p.key, error: errorMessage(err) }))));
    });
  }
}

export type { Namespace };
