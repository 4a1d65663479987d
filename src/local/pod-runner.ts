/**
 * One running pod: its sandbox (netns + CNI) and its container processes, its readiness (a declared
 * containerPort is listening in the pod netns) and the status the runtime writes to the object store.
 */
import { readFileSync } from 'node:fs';
import type { Pod, PodStatus } from '../api/k8s.ts';
import { errorMessage } from '../shared/errors.ts';
import { PACKAGE_ROOT } from './instance.ts';
import type { NodeInfo } from './instance.ts';
import { containerCommand } from './objects.ts';
import { SupervisedProcess } from './processes.ts';
import { podIPOf, type SandboxRecord } from './sandbox.ts';

export type PodPhase = 'Pending' | 'Running' | 'Failed' | 'Terminating';

/** Ports in LISTEN state in the netns a process lives in (/proc/PID/net/tcp{,6}). */
export function listeningPorts(pid: number): Set<number> {
  const out = new Set<number>();
  for (const f of ['tcp', 'tcp6']) {
    let text = '';
    try { text = readFileSync(`/proc/${pid}/net/${f}`, 'utf8'); } catch { continue; }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 3 && cols[3] === '0A') out.add(parseInt(cols[1].split(':')[1], 16));
    }
  }
  return out;
}

export class PodRunner {
  pod: Pod;
  readonly node: NodeInfo;
  phase: PodPhase = 'Pending';
  message: string | undefined;
  ready = false;
  sandbox: SandboxRecord | undefined;
  containers: SupervisedProcess[] = [];
  startedAt: string | undefined;
  /** The sandbox + container start in progress. */
  starting: Promise<void> | undefined;

  constructor(pod: Pod, node: NodeInfo) {
    this.pod = pod;
    this.node = node;
  }

  get key(): string { return `${this.pod.metadata.namespace}/${this.pod.metadata.name}`; }
  get podIP(): string | undefined { return this.sandbox ? podIPOf(this.sandbox) : undefined; }

  startContainers(logFile: (container: string) => string): void {
    const pod = this.pod;
    const env = (extra: { name: string; value?: string }[] | undefined, port: number | undefined): NodeJS.ProcessEnv => {
      const e: NodeJS.ProcessEnv = {
        PATH: `${PACKAGE_ROOT}/node_modules/.bin:${PACKAGE_ROOT}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
        HOME: '/root',
        HOSTNAME: pod.metadata.name,
        POD_NAME: pod.metadata.name,
        POD_NAMESPACE: pod.metadata.namespace ?? 'default',
        POD_IP: this.podIP ?? '',
        POD_VERSION: pod.metadata.labels?.version ?? '',
        NODE_NAME: this.node.name,
        PORT: String(port ?? 8080),
      };
      for (const v of extra ?? []) if (v && typeof v.name === 'string') e[v.name] = v.value ?? '';
      return e;
    };
    const restart = (pod.spec.restartPolicy ?? 'Always') as 'Always' | 'OnFailure' | 'Never';
    this.containers = pod.spec.containers.map((c) => new SupervisedProcess({
      label: `${this.key}/${c.name}`,
      netns: this.sandbox!.netns,
      command: containerCommand(c, `Pod ${this.key}`),
      env: env(c.env, c.ports?.[0]?.containerPort),
      logFile: logFile(c.name),
      restart,
    }));
    for (const p of this.containers) p.start();
    this.startedAt = new Date().toISOString();
  }

  /** Ready = every container process runs and every declared containerPort listens. */
  checkReady(): boolean {
    if (this.phase !== 'Running') return false;
    const ports = this.pod.spec.containers.flatMap((c) => (c.ports ?? []).filter((p) => (p.protocol ?? 'TCP') === 'TCP').map((p) => p.containerPort));
    const pids = this.containers.map((c) => c.pid);
    if (pids.some((p) => p === undefined)) return false;
    if (ports.length === 0) return true;
    const listening = listeningPorts(pids[0]!);
    return ports.every((p) => listening.has(p));
  }

  /** A container that keeps failing: its last exit, for `apply` and status messages. */
  crashInfo(): string | undefined {
    for (const c of this.containers) {
      if (!c.running && c.lastExit) {
        const how = c.lastExit.signal ? `signal ${c.lastExit.signal}` : `exit code ${c.lastExit.code}`;
        return `container ${c.spec.label.split('/').pop()} exited (${how}), restarts ${c.restarts}; see its log ${c.spec.logFile}`;
      }
    }
    return undefined;
  }

  status(): PodStatus & Record<string, unknown> {
    const ip = this.podIP;
    const readyCond = { type: 'Ready', status: (this.ready ? 'True' : 'False') as 'True' | 'False', ...(this.message ? { message: this.message } : {}) };
    const st: PodStatus & Record<string, unknown> = {
      phase: this.phase === 'Terminating' ? 'Running' : this.phase,
      hostIP: this.node.ip,
      conditions: [{ type: 'PodScheduled', status: 'True' }, readyCond, { type: 'ContainersReady', status: readyCond.status }],
    };
    if (ip) { st.podIP = ip; st.podIPs = [{ ip }]; }
    if (this.startedAt) st.startTime = this.startedAt;
    if (this.message) st.message = this.message;
    if (this.containers.length > 0) {
      st.containerStatuses = this.containers.map((c, i) => ({
        name: this.pod.spec.containers[i].name,
        image: this.pod.spec.containers[i].image ?? '',
        ready: this.ready,
        restartCount: c.restarts,
        state: c.running ? { running: { startedAt: new Date(c.startedAt).toISOString() } } : { waiting: { reason: 'CrashLoopBackOff' } },
      }));
    }
    return st;
  }

  async stopContainers(): Promise<void> {
    await Promise.all(this.containers.map((c) => c.stop().catch((err) => { this.message = errorMessage(err); })));
  }
}
