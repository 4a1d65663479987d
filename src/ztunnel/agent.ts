/**
 * The node agent: one per node. It takes pods from the CNI plugin (hand-off socket), keeps the
 * mesh state pushed by the controller, holds the pods' certificates, and runs a PodProxy (listeners
 * 15001/15006/15008 inside the pod's netns) for every enrolled pod of its node.
 *
 * It keeps a record and a netns fd for every pod of the node, enrolled or not, so that a label
 * change enrolls or releases a running pod (src/ztunnel/enrollment.ts): the agent then installs or
 * removes the in-pod rules itself, through its own fd (/proc/<pid>/fd/<n>), and starts or stops
 * the PodProxy. Pod operations are serialised per uid (hand-off, reconciler, DEL).
 */
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { PORTS } from '../api/constants.ts';
import type { PodHandoffAdd } from '../api/pod-handoff.ts';
import { spiffeId } from '../api/mesh.ts';
import { AmbitError, errorMessage } from '../shared/errors.ts';
import { logger } from '../shared/log.ts';
import { closeFd, openNetns } from '../native/index.ts';
import { StateStore } from './state/store.ts';
import { ConfigClient } from './config/config-client.ts';
import { CertificateManager } from './identity/certificate-manager.ts';
import { PodHandoffServer } from './pod-handoff-server.ts';
import { PodProxy } from './proxy/pod-proxy.ts';
import { netnsPodSockets } from './proxy/pod-sockets.ts';
import { HbonePool } from './proxy/pool.ts';
import { ConnectionTracker } from './proxy/connections.ts';
import { PodRecords } from './pod-records.ts';
import { startAgentMetrics, type AgentMetrics } from './metrics/server.ts';
import { AdminServer } from './admin/admin-server.ts';
import { stateAuthorizer } from './authz/authorizer.ts';
import { PolicyRechecker } from './authz/recheck.ts';
import { EnrollmentReconciler } from './enrollment.ts';
import * as inPodRules from '../cni/in-pod-rules.ts';
import { createLiteServer, type LiteServer } from '../shared/http-lite.ts';

const log = logger('agent');

export interface NodeAgentOptions {
  node: string;
  controller: string;
  runDir: string;
  trustDomain: string;
  /** The agent's client certificate for the controller (local mesh), or... */
  certPem?: string;
  keyPem?: string;
  /** ...a projected ServiceAccount token file (cluster), re-read for every call. */
  tokenFile?: string;
  /** The mesh root: the controller's server certificate must chain to it. */
  rootsPem: string;
  /** Readiness endpoint address (default 0.0.0.0:15021 in the agent's netns). */
  readinessHost?: string;
  readinessPort?: number;
  /** Prometheus endpoint (default 0.0.0.0:15020 in the agent's netns); cluster id for its labels. */
  metricsHost?: string;
  metricsPort?: number;
  cluster?: string;
  /** Admin API address (default 127.0.0.1:15000, loopback of the agent's netns). */
  adminHost?: string;
  adminPort?: number;
}

/** A pod of this node; it is enrolled (served) when it has a proxy. */
interface LocalPod {
  info: PodHandoffAdd;
  netnsFd: number;
  proxy?: PodProxy;
  /** The in-pod rules may have been installed by the agent (runtime enrollment): DEL removes them too. */
  agentRules?: boolean;
}

/** The pod's netns through the agent's own fd: valid as long as the fd is, whatever its path. */
const fdPath = (fd: number) => `/proc/${process.pid}/fd/${fd}`;

export class NodeAgent {
  readonly #opts: NodeAgentOptions;
  readonly #store = new StateStore();
  readonly #config: ConfigClient;
  readonly #certs: CertificateManager;
  readonly #pool: HbonePool;
  readonly #connections = new ConnectionTracker();
  readonly #records: PodRecords;
  readonly #pods = new Map<string, LocalPod>();
  readonly #locks = new Map<string, Promise<void>>();
  /** Inbound L4 authorization from the pushed policies; re-applied to open connections on change. */
  readonly #authorize = stateAuthorizer(this.#store);
  readonly #recheck = new PolicyRechecker({
    state: this.#store,
    authorize: this.#authorize,
    records: () => this.#servedUids().flatMap((uid) => this.#connections.recordsOf(uid)),
    localUids: () => this.#servedUids(),
  });
  readonly #enrollment = new EnrollmentReconciler({
    state: this.#store,
    pods: () => [...this.#pods.values()].map((p) => ({ uid: p.info.uid, namespace: p.info.namespace, name: p.info.name, enrolled: !!p.proxy })),
    enroll: (uid) => this.#locked(uid, () => this.#enroll(uid)),
    release: (uid) => this.#locked(uid, () => this.#release(uid)),
  });
  #handoff: PodHandoffServer | undefined;
  #readiness: LiteServer | undefined;
  #metrics: AgentMetrics | undefined;
  #admin: AdminServer | undefined;
  #ready = false;

  constructor(opts: NodeAgentOptions) {
    this.#opts = opts;
    this.#records = new PodRecords(opts.runDir);
    this.#config = new ConfigClient({
      address: opts.controller,
      node: opts.node,
      certPem: opts.certPem,
      keyPem: opts.keyPem,
      rootsPem: opts.rootsPem,
      tokenFile: opts.tokenFile,
      store: this.#store,
      // New roots are trusted as soon as the controller says so, not only with the next certificate.
      onTrustBundle: (rootsPem) => this.#certs.adoptTrustBundle(rootsPem),
    });
    this.#certs = new CertificateManager({ signer: this.#config.signCsr, trustDomain: opts.trustDomain });
    this.#pool = new HbonePool();
    // Certificate requests back off while the controller is away; ask again as soon as it is back.
    this.#config.onSynced(() => this.#certs.retryNow());
  }

  get state(): StateStore { return this.#store; }
  get connections(): ConnectionTracker { return this.#connections; }
  get certificates(): CertificateManager { return this.#certs; }
  /** The pods this agent serves (enrolled). */
  pods(): PodHandoffAdd[] { return [...this.#pods.values()].filter((p) => p.proxy).map((p) => p.info); }
  /** Every pod of the node the agent knows, enrolled or not. */
  localPods(): PodHandoffAdd[] { return [...this.#pods.values()].map((p) => p.info); }
  #servedUids(): string[] { return [...this.#pods.values()].filter((p) => p.proxy).map((p) => p.info.uid); }

  async start(): Promise<void> {
    this.#readiness = await this.#startReadiness();
    // Metrics are for observation: if the port is taken the agent still serves traffic.
    this.#metrics = await startAgentMetrics({
      connections: this.#connections, state: this.#store,
      host: this.#opts.metricsHost, port: this.#opts.metricsPort, cluster: this.#opts.cluster,
    }).catch((err: unknown) => void log.error('metrics endpoint not available', { error: errorMessage(err) }));
    await this.#startAdmin();
    this.#recheck.start();
    this.#config.start();
    // Pods this node served before a restart come back first, so their traffic flows again
    // without waiting for the controller (identities are fetched as soon as it answers).
    for (const pod of await this.#records.load()) {
      if (!existsSync(pod.netnsPath)) {
        log.info('forgetting pod whose netns is gone', { pod: `${pod.namespace}/${pod.name}`, netns: pod.netnsPath });
        await this.#records.remove(pod.uid);
        continue;
      }
      try {
        await this.#addPod(pod, openNetns(pod.netnsPath), false, true);
      } catch (err) {
        log.error('cannot take back pod after restart', { pod: `${pod.namespace}/${pod.name}`, error: errorMessage(err) });
      }
    }
    this.#handoff = new PodHandoffServer({
      socketPath: join(this.#opts.runDir, 'ztunnel.sock'),
      onAdd: ({ netnsFd, ...pod }) => this.#locked(pod.uid, () => this.#addPod(pod, netnsFd, true)),
      onDel: (uid) => this.#locked(uid, () => this.#removePod(uid)),
    });
    await this.#handoff.start();
    this.#enrollment.start();
    this.#ready = true;
    log.info('agent ready', { node: this.#opts.node, controller: this.#opts.controller, pods: this.#servedUids().length, localPods: this.#pods.size });
  }

  async stop(drainMs = 5000): Promise<void> {
    this.#ready = false;
    this.#recheck.stop();
    await this.#handoff?.close();
    await this.#enrollment.stop();
    await Promise.allSettled([...this.#pods.values()].map((p) => p.proxy?.stop(drainMs)));
    for (const p of this.#pods.values()) closeFd(p.netnsFd);
    this.#pods.clear();
    this.#pool.close();
    this.#certs.stop();
    await this.#config.stop();
    await this.#metrics?.close();
    await this.#admin?.close();
    this.#readiness?.closeAllConnections();
    await new Promise<void>((resolve) => (this.#readiness ? this.#readiness.close(() => resolve()) : resolve()));
  }

  /** Runs pod operations of one uid one after the other (hand-off, reconciler, DEL). */
  #locked<T>(uid: string, fn: () => Promise<T>): Promise<T> {
    const run = (this.#locks.get(uid) ?? Promise.resolve()).then(fn);
    const tail = run.then(() => {}, () => {});
    this.#locks.set(uid, tail);
    void tail.then(() => { if (this.#locks.get(uid) === tail) this.#locks.delete(uid); });
    return run;
  }

  async #addPod(info: PodHandoffAdd, netnsFd: number, persist: boolean, restored = false): Promise<void> {
    const key = `${info.namespace}/${info.name}`;
    const previous = this.#pods.get(info.uid);
    if (previous) {
      // A repeated ADD (the runtime retried): keep going with the new netns handle.
      await previous.proxy?.stop(0);
      closeFd(previous.netnsFd);
      this.#pods.delete(info.uid);
    }
    const enrolled = info.enrolled !== false;
    const pod: LocalPod = { info: { ...info, enrolled }, netnsFd };
    if (enrolled) {
      pod.proxy = await this.#startProxy(pod.info, netnsFd);
      // After a restart we cannot tell who installed the rules: let DEL make sure they are gone.
      pod.agentRules = restored;
    }
    this.#pods.set(info.uid, pod);
    if (persist) await this.#records.save(pod.info);
    if (enrolled) log.info('pod added', { pod: key, uid: info.uid, ips: info.ips.join(','), serviceAccount: info.serviceAccount });
    else log.info('pod recorded, not enrolled', { pod: key, uid: info.uid, ips: info.ips.join(',') });
    // Its workload record may already say otherwise (a label changed while it started).
    this.#enrollment.trigger();
  }

  async #startProxy(info: PodHandoffAdd, netnsFd: number): Promise<PodProxy> {
    const key = `${info.namespace}/${info.name}`;
    const identity = { namespace: info.namespace, serviceAccount: info.serviceAccount };
    // Ask for the certificate now; the HBONE listener waits for it, the other listeners do not.
    this.#certs.get(identity).catch((err: unknown) =>
      log.warn('certificate not issued yet; retrying', { pod: key, identity: spiffeId(this.#opts.trustDomain, info.namespace, info.serviceAccount), error: errorMessage(err) }));
    const proxy = new PodProxy({
      pod: { uid: info.uid, name: info.name, namespace: info.namespace, serviceAccount: info.serviceAccount, ips: info.ips, netnsFd },
      sockets: netnsPodSockets(netnsFd),
      state: this.#store,
      certs: this.#certs,
      pool: this.#pool,
      connections: this.#connections,
      trustDomain: this.#opts.trustDomain,
      authorize: this.#authorize,
    });
    try {
      await proxy.start();
    } catch (err) {
      await proxy.stop(0).catch(() => {});
      throw new AmbitError('ZT_POD_LISTEN', `cannot open the mesh listeners in pod ${key} (netns ${info.netnsPath}): ${errorMessage(err)}`, { cause: err });
    }
    return proxy;
  }

  /**
   * Runtime enrollment: listeners first, then the rules that send traffic to them. Connections
   * already open are not redirected (NAT is decided on a connection's first packet), so they go on.
   * The record says "enrolled" before the rules exist: after a crash the pod is served and, if it
   * should not be, released (rules removed) by the reconciler, never left redirected to nothing.
   */
  async #enroll(uid: string): Promise<void> {
    const pod = this.#pods.get(uid);
    if (!pod || pod.proxy) return;
    const key = `${pod.info.namespace}/${pod.info.name}`;
    const info: PodHandoffAdd = { ...pod.info, enrolled: true };
    await this.#records.save(info);
    let proxy: PodProxy | undefined;
    try {
      proxy = await this.#startProxy(info, pod.netnsFd);
      // install() rolls itself back on failure.
      await inPodRules.install(fdPath(pod.netnsFd), { ipv6: info.ips.some((ip) => ip.includes(':')) });
    } catch (err) {
      await proxy?.stop(0).catch(() => {});
      await this.#records.save(pod.info).catch(() => {});
      throw err;
    }
    pod.proxy = proxy;
    pod.agentRules = true;
    pod.info = info;
    log.info('pod enrolled at run time', { pod: key, uid, ips: info.ips.join(','), serviceAccount: info.serviceAccount });
  }

  /** Runtime release: rules first (new connections go straight to the app), then the listeners. */
  async #release(uid: string): Promise<void> {
    const pod = this.#pods.get(uid);
    if (!pod?.proxy) return;
    const key = `${pod.info.namespace}/${pod.info.name}`;
    await inPodRules.remove(fdPath(pod.netnsFd));
    const proxy = pod.proxy;
    pod.proxy = undefined;
    pod.agentRules = false;
    pod.info = { ...pod.info, enrolled: false };
    // Connections through the proxy crossed the change: they end with it.
    await proxy.stop(0);
    await this.#records.save(pod.info);
    this.#forgetIdentityIfUnused(pod.info);
    log.info('pod released at run time', { pod: key, uid });
  }

  async #removePod(uid: string): Promise<void> {
    const pod = this.#pods.get(uid);
    await this.#records.remove(uid);
    if (!pod) return;
    this.#pods.delete(uid);
    if (pod.proxy) await pod.proxy.stop(0);
    // The CNI plugin removed its rules before telling us; rules the agent installed may be newer.
    if (pod.agentRules) {
      await inPodRules.remove(fdPath(pod.netnsFd)).catch((err: unknown) =>
        log.warn('cannot remove in-pod rules of a deleted pod', { uid, error: errorMessage(err) }));
    }
    closeFd(pod.netnsFd);
    if (pod.proxy) this.#forgetIdentityIfUnused(pod.info);
    log.info('pod removed', { pod: `${pod.info.namespace}/${pod.info.name}`, uid });
  }

  #forgetIdentityIfUnused(info: PodHandoffAdd): void {
    const { namespace, serviceAccount } = info;
    const stillUsed = [...this.#pods.values()].some((p) => p.proxy && p.info.namespace === namespace && p.info.serviceAccount === serviceAccount);
    if (!stillUsed) this.#certs.forget({ namespace, serviceAccount });
  }

  /** The admin API is for inspection only: if its port is taken the agent still serves traffic. */
  async #startAdmin(): Promise<void> {
    const admin = new AdminServer({
      node: this.#opts.node, state: this.#store, certificates: this.#certs, connections: this.#connections,
      pods: () => this.pods(), host: this.#opts.adminHost, port: this.#opts.adminPort,
    });
    try {
      await admin.start();
      this.#admin = admin;
    } catch (err) {
      log.error('admin API not available', { error: errorMessage(err) });
    }
  }

  #startReadiness(): Promise<LiteServer> {
    const server = createLiteServer((req) => {
      if (req.target === '/healthz/ready') {
        const ok = this.#ready;
        return { status: ok ? 200 : 503, headers: { 'content-type': 'text/plain' }, body: ok ? 'ready\n' : 'starting\n' };
      }
      return { status: 404 };
    }, { name: 'agent' });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.#opts.readinessPort ?? PORTS.readiness, this.#opts.readinessHost ?? '0.0.0.0', () => resolve(server));
    });
  }
}
