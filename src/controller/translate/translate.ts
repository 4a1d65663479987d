/**
 * Snapshot -> mesh configuration: Pods become Workloads, Services become MeshServices with their
 * endpoints (the pods their selector matches). Pure: same snapshot in, same result out (sorted), so
 * versions computed from the output are stable across controller restarts.
 *
 * An object that fails validation is reported (object, field, message) and skipped; everything
 * else still translates.
 */
import type { KubeObject, Pod, Service } from '../../api/k8s.ts';
import { DATAPLANE_AMBIENT, DATAPLANE_NONE, DEFAULT_TRUST_DOMAIN, LABELS } from '../../api/constants.ts';
import { serviceKey, type Endpoint, type MeshService, type ServicePort, type Workload } from '../../api/mesh.ts';
import { checkIP, checkPort, checkPortName, checkStringMap, describe, isPlainObject } from './validate.ts';

export interface TranslateOptions {
  trustDomain?: string;
  /** Suffix of service hostnames; default cluster.local. */
  clusterDomain?: string;
}

export interface Problem {
  /** e.g. `Service demo/echo` */
  object: string;
  /** e.g. `spec.ports[0].port` */
  field: string;
  message: string;
}

export interface TranslateResult {
  workloads: Workload[];
  services: MeshService[];
  problems: Problem[];
}

/** A validation failure of one object: the field and what is wrong with it. */
export class Invalid extends Error {
  readonly field: string;
  constructor(field: string, message: string) {
    super(message);
    this.field = field;
  }
}

export function must(field: string, problem: string | undefined): void {
  if (problem !== undefined) throw new Invalid(field, problem);
}

/** `Kind namespace/name` (no namespace for cluster objects), as problems name objects. */
export function objectName(o: KubeObject): string {
  const ns = o.metadata.namespace;
  return `${o.kind} ${ns ? `${ns}/` : ''}${o.metadata.name}`;
}

export function translate(snapshot: { objects: KubeObject[] }, opts: TranslateOptions = {}): TranslateResult {
  const trustDomain = opts.trustDomain ?? DEFAULT_TRUST_DOMAIN;
  const clusterDomain = opts.clusterDomain ?? 'cluster.local';
  const problems: Problem[] = [];
  const report = (o: KubeObject, err: unknown): void => {
    if (err instanceof Invalid) problems.push({ object: objectName(o), field: err.field, message: err.message });
    else throw err;
  };

  // Group by kind; the first definition of an object wins, later duplicates are reported.
  const seen = new Set<string>();
  const namespaces = new Map<string, Record<string, string>>();
  const pods: Pod[] = [];
  const services: Service[] = [];
  for (const o of snapshot.objects) {
    if (o.kind !== 'Namespace' && o.kind !== 'Pod' && o.kind !== 'Service') continue;
    const ns = o.kind === 'Namespace' ? '' : (o.metadata.namespace ?? 'default');
    const id = `${o.kind}/${ns}/${o.metadata.name}`;
    if (seen.has(id)) {
      problems.push({ object: objectName(o), field: 'metadata.name', message: 'defined more than once; the first definition is used' });
      continue;
    }
    seen.add(id);
    try {
      if (o.metadata.namespace !== undefined) must('metadata.namespace', typeof o.metadata.namespace === 'string' ? undefined : `must be a string, got ${describe(o.metadata.namespace)}`);
      must('metadata.labels', checkStringMap(o.metadata.labels));
      if (o.kind === 'Namespace') namespaces.set(o.metadata.name, { ...(o.metadata.labels ?? {}) });
      else if (o.kind === 'Pod') pods.push(o as Pod);
      else services.push(o as Service);
    } catch (err) {
      report(o, err);
    }
  }

  const workloads: Workload[] = [];
  const podOf = new Map<string, Pod>(); // workload uid -> pod, for named port resolution
  for (const pod of pods) {
    try {
      const w = podToWorkload(pod, namespaces, trustDomain);
      if (w) {
        workloads.push(w);
        podOf.set(w.uid, pod);
      }
    } catch (err) {
      report(pod, err);
    }
  }
  workloads.sort((a, b) => cmp(a.namespace, b.namespace) || cmp(a.name, b.name) || cmp(a.uid, b.uid));

  const out: MeshService[] = [];
  const byLabel = indexByLabel(workloads);
  for (const svc of services) {
    try {
      out.push(serviceToMesh(svc, byLabel, podOf, clusterDomain));
    } catch (err) {
      report(svc, err);
    }
  }
  out.sort((a, b) => cmp(a.namespace, b.namespace) || cmp(a.name, b.name));
  return { workloads, services: out, problems };
}

export function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Pod -> Workload, or undefined when it has no IP yet or has terminated. Throws Invalid. */
export function podToWorkload(pod: Pod, namespaces: Map<string, Record<string, string>>, trustDomain: string): Workload | undefined {
  const spec: unknown = pod.spec;
  must('spec', isPlainObject(spec) ? undefined : `must be a map, got ${describe(spec)}`);
  const status: unknown = pod.status ?? {};
  must('status', isPlainObject(status) ? undefined : `must be a map, got ${describe(status)}`);
  const st = pod.status ?? {};
  if (st.phase === 'Succeeded' || st.phase === 'Failed') return undefined;

  const addresses: string[] = [];
  if (st.podIPs !== undefined) {
    must('status.podIPs', Array.isArray(st.podIPs) ? undefined : `must be a list, got ${describe(st.podIPs)}`);
    st.podIPs.forEach((p, i) => {
      must(`status.podIPs[${i}].ip`, checkIP(isPlainObject(p) ? p.ip : p));
      if (!addresses.includes(p.ip)) addresses.push(p.ip);
    });
  }
  if (st.podIP !== undefined && st.podIP !== '') {
    must('status.podIP', checkIP(st.podIP));
    if (!addresses.includes(st.podIP)) addresses.unshift(st.podIP);
  }
  if (addresses.length === 0) return undefined;

  for (const f of ['nodeName', 'serviceAccountName'] as const) {
    const v: unknown = pod.spec[f];
    if (v !== undefined) must(`spec.${f}`, typeof v === 'string' ? undefined : `must be a string, got ${describe(v)}`);
  }
  checkContainers(pod);

  const namespace = pod.metadata.namespace ?? 'default';
  const labels = { ...(pod.metadata.labels ?? {}) };
  const nsLabels = namespaces.get(namespace) ?? {};
  const podMode = labels[LABELS.dataplaneMode];
  // Istio: the pod label `none` opts out; `ambient` on the pod enrolls it even if the namespace is not.
  const enrolled = podMode !== DATAPLANE_NONE && (nsLabels[LABELS.dataplaneMode] === DATAPLANE_AMBIENT || podMode === DATAPLANE_AMBIENT);

  let ready: boolean;
  if (Array.isArray(st.conditions) && st.conditions.length > 0) {
    ready = st.conditions.some((c) => isPlainObject(c) && c.type === 'Ready' && c.status === 'True');
  } else {
    ready = st.phase === 'Running';
  }
  if (pod.metadata.deletionTimestamp) ready = false; // terminating: keep the record, stop routing new connections

  return {
    uid: pod.metadata.uid || `${namespace}/${pod.metadata.name}`,
    name: pod.metadata.name,
    namespace,
    addresses,
    node: pod.spec.nodeName ?? '',
    serviceAccount: pod.spec.serviceAccountName || 'default',
    trustDomain,
    protocol: enrolled ? 'HBONE' : 'TCP',
    ready,
    labels,
    canonicalName: labels[LABELS.canonicalName] || labels['app.kubernetes.io/name'] || labels.app || pod.metadata.name,
    canonicalRevision: labels[LABELS.canonicalRevision] || labels['app.kubernetes.io/version'] || labels.version || 'latest',
    workloadName: workloadName(pod),
    services: {},
  };
}

/**
 * The name of what runs the pod, as Istio derives it for metrics: the controlling owner's name,
 * with a ReplicaSet's pod-template-hash suffix removed (its Deployment) and a CronJob's Job
 * timestamp suffix removed; the pod's own name for a bare pod.
 */
export function workloadName(pod: Pod): string {
  const refs: unknown = pod.metadata.ownerReferences;
  const owner = Array.isArray(refs) ? refs.find((r) => isPlainObject(r) && r.controller === true && typeof r.name === 'string' && r.name !== '') : undefined;
  if (!owner) return pod.metadata.name;
  const name = owner.name as string;
  if (owner.kind === 'ReplicaSet') {
    const hash = pod.metadata.labels?.['pod-template-hash'];
    if (hash && name.endsWith(`-${hash}`)) return name.slice(0, -hash.length - 1);
  }
  if (owner.kind === 'Job') {
    const m = /^(.+)-\d{8,10}$/.exec(name);
    if (m) return m[1];
  }
  return name;
}

function checkContainers(pod: Pod): void {
  const containers: unknown = pod.spec.containers;
  if (containers === undefined) return;
  must('spec.containers', Array.isArray(containers) ? undefined : `must be a list, got ${describe(containers)}`);
  (containers as unknown[]).forEach((c, i) => {
    must(`spec.containers[${i}]`, isPlainObject(c) ? undefined : `must be a map, got ${describe(c)}`);
    const ports = (c as { ports?: unknown }).ports;
    if (ports === undefined) return;
    must(`spec.containers[${i}].ports`, Array.isArray(ports) ? undefined : `must be a list, got ${describe(ports)}`);
    (ports as unknown[]).forEach((p, j) => {
      const at = `spec.containers[${i}].ports[${j}]`;
      must(at, isPlainObject(p) ? undefined : `must be a map, got ${describe(p)}`);
      must(`${at}.containerPort`, checkPort((p as { containerPort?: unknown }).containerPort));
      const name = (p as { name?: unknown }).name;
      if (name !== undefined) must(`${at}.name`, typeof name === 'string' ? checkPortName(name) : `must be a string, got ${describe(name)}`);
    });
  });
}

/**
 * Workloads by `namespace\0key\0value` of each label, in workload order: a service's candidates
 * are those carrying one of its selector's labels, not every workload (1000 services x 2000 pods
 * made this loop most of a translation).
 */
function indexByLabel(workloads: Workload[]): Map<string, Workload[]> {
  const index = new Map<string, Workload[]>();
  for (const w of workloads) {
    for (const k in w.labels) {
      const key = `${w.namespace}\0${k}\0${w.labels[k]}`;
      const list = index.get(key);
      if (list) list.push(w);
      else index.set(key, [w]);
    }
  }
  return index;
}

function serviceToMesh(svc: Service, byLabel: Map<string, Workload[]>, podOf: Map<string, Pod>, clusterDomain: string): MeshService {
  const spec: unknown = svc.spec;
  must('spec', isPlainObject(spec) ? undefined : `must be a map, got ${describe(spec)}`);
  const namespace = svc.metadata.namespace ?? 'default';
  must('spec.selector', checkStringMap(svc.spec.selector));

  // Cluster IPs: clusterIPs wins over clusterIP (as in Kubernetes); "None" means headless.
  const vips: string[] = [];
  const rawIPs: unknown = svc.spec.clusterIPs ?? (svc.spec.clusterIP === undefined ? [] : [svc.spec.clusterIP]);
  must('spec.clusterIPs', Array.isArray(rawIPs) ? undefined : `must be a list, got ${describe(rawIPs)}`);
  const field = svc.spec.clusterIPs !== undefined ? 'spec.clusterIPs' : 'spec.clusterIP';
  (rawIPs as unknown[]).forEach((ip, i) => {
    if (ip === 'None' || ip === '') return;
    must(svc.spec.clusterIPs !== undefined ? `${field}[${i}]` : field, checkIP(ip));
    if (!vips.includes(ip as string)) vips.push(ip as string);
  });

  const ports = servicePorts(svc);
  const selector = svc.spec.selector;
  const endpoints: Endpoint[] = [];
  const key = serviceKey({ namespace, name: svc.metadata.name });
  // An absent or empty selector selects nothing here: such services get endpoints some other way.
  const wanted = selector ? Object.entries(selector) : [];
  if (wanted.length > 0) {
    const [k0, v0] = wanted[0]!;
    for (const w of byLabel.get(`${namespace}\0${k0}\0${v0}`) ?? []) {
      if (!wanted.every(([k, v]) => w.labels[k] === v)) continue;
      const resolved: Record<number, number> = {};
      for (const p of ports) {
        const target = typeof p.targetPort === 'number' ? p.targetPort : namedPort(podOf.get(w.uid), p.targetPort, p.protocol);
        if (target !== undefined) resolved[p.port] = target;
      }
      if (ports.length > 0 && Object.keys(resolved).length === 0) continue;
      endpoints.push({ workloadUid: w.uid, address: w.addresses[0], ports: resolved, ready: w.ready });
      w.services[key] = { ...resolved };
    }
  }

  return {
    name: svc.metadata.name,
    namespace,
    hostname: `${svc.metadata.name}.${namespace}.svc.${clusterDomain}`,
    vips,
    ports,
    endpoints,
  };
}

function servicePorts(svc: Service): ServicePort[] {
  const raw: unknown = svc.spec.ports ?? [];
  must('spec.ports', Array.isArray(raw) ? undefined : `must be a list, got ${describe(raw)}`);
  const out: ServicePort[] = [];
  const used = new Set<string>();
  (raw as unknown[]).forEach((p, i) => {
    const at = `spec.ports[${i}]`;
    must(at, isPlainObject(p) ? undefined : `must be a map, got ${describe(p)}`);
    const sp = p as Record<string, unknown>;
    must(`${at}.port`, checkPort(sp.port));
    const protocol = sp.protocol ?? 'TCP';
    must(`${at}.protocol`, protocol === 'TCP' || protocol === 'UDP' || protocol === 'SCTP' ? undefined : `must be TCP, UDP or SCTP, got ${describe(protocol)}`);
    let targetPort: number | string = sp.port as number;
    if (sp.targetPort !== undefined && sp.targetPort !== 0 && sp.targetPort !== '') {
      if (typeof sp.targetPort === 'string') {
        // "8080" as a string is a number in Kubernetes' IntOrString, not a name.
        if (/^\d+$/.test(sp.targetPort)) {
          must(`${at}.targetPort`, checkPort(Number(sp.targetPort)));
          targetPort = Number(sp.targetPort);
        } else {
          must(`${at}.targetPort`, checkPortName(sp.targetPort));
          targetPort = sp.targetPort;
        }
      } else {
        must(`${at}.targetPort`, checkPort(sp.targetPort));
        targetPort = sp.targetPort as number;
      }
    }
    const id = `${protocol as string}/${sp.port as number}`;
    must(`${at}.port`, used.has(id) ? `port ${sp.port as number}/${protocol as string} is listed twice` : undefined);
    used.add(id);
    if (sp.name !== undefined) must(`${at}.name`, typeof sp.name === 'string' ? undefined : `must be a string, got ${describe(sp.name)}`);
    const port: ServicePort = { port: sp.port as number, targetPort, protocol: protocol as ServicePort['protocol'] };
    if (typeof sp.name === 'string' && sp.name !== '') port.name = sp.name;
    if (typeof sp.appProtocol === 'string' && sp.appProtocol !== '') port.appProtocol = sp.appProtocol;
    out.push(port);
  });
  return out;
}

/** The container port a named targetPort means on this pod, if the pod has one by that name. */
function namedPort(pod: Pod | undefined, name: string, protocol: string): number | undefined {
  for (const c of pod?.spec.containers ?? []) {
    for (const p of c.ports ?? []) {
      if (p.name === name && (p.protocol ?? 'TCP') === protocol) return p.containerPort;
    }
  }
  return undefined;
}
