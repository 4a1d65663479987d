/**
 * The node agent: one per node. It takes pods from the CNI plugin (hand-off socket), keeps the
 * mesh state pushed by the controller, holds the pods' certificates, and runs a PodProxy (listeners
 * 15001/15006/15008 inside the pod's netns) for every enrolled pod of its node.
 */
import { createServer, type Server } from 'node:http';
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

const log = logger('agent');

export interface NodeAgentOptions {
  node: string;
  controller: string;
  runDir: string;
  trustDomain: string;
  certPem: string;
  keyPem: string;
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

interface ServedPod {
  info: PodHandoffAdd;
  netnsFd: number;
  proxy: PodProxy;
}

export class NodeAgent {
  readonly #opts: NodeAgentOptions;
  readonly #store = new StateStore();
  readonly #config: ConfigClient;
  readonly #certs: CertificateManager;
  readonly #pool: HbonePool;
  readonly #connections = new ConnectionTracker();
  readonly #records: PodRecords;
  readonly #pods = new Map<string, ServedPod>();
  /** Inbound L4 authorization from the pushed policies; re-applied to open connections on change. */
  readonly #authorize = stateAuthorizer(this.#store);
  readonly #recheck = new PolicyRechecker({
    state: this.#store,
    authorize: this.#authorize,
    records: () => [...this.#pods.keys()].flatMap((uid) => this.#connections.recordsOf(uid)),
    localUids: () => this.#pods.keys(),
  });
  #handoff: PodHandoffServer | undefined;
  #readiness: Server | undefined;
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
      store: this.#store,
    });
    this.#certs = new CertificateManager({ signer: this.#config.signCsr, trustDomain: opts.trustDomain });
    this.#pool = new HbonePool();
    // Certificate requests back off while the controller is away; ask again as soon as it is back.
    this.#config.onSynced(() => this.#certs.retryNow());
  }

  get state(): StateStore { return this.#store; }
  get connections(): ConnectionTracker { return this.#connections; }
  get certificates(): CertificateManager { return this.#certs; }
  pods(): PodHandoffAdd[] { return [...this.#pods.values()].map((p) => p.info); }

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
        await this.#addPod(pod, openNetns(pod.netnsPath), false);
      } catch (err) {
        log.error('cannot take back pod after restart', { pod: `${pod.namespace}/${pod.name}`, error: errorMessage(err) });
      }
    }
    this.#handoff = new PodHandoffServer({
      socketPath: join(this.#opts.runDir, 'ztunnel.sock'),
      onAdd: (pod) => this.#addPod(pod, pod.netnsFd, true),
      onDel: (uid) => this.#removePod(uid),
    });
    await this.#handoff.start();
    this.#ready = true;
    log.info('agent ready', { node: this.#opts.node, controller: this.#opts.controller, pods: this.#pods.size });
  }

  async stop(drainMs = 5000): Promise<void> {
    this.#ready = false;
    this.#recheck.stop();
    await this.#handoff?.close();
    await Promise.allSettled([...this.#pods.values()].map((p) => p.proxy.stop(drainMs)));
    for (const p of this.#pods.values()) closeFd(p.netnsFd);
    this.#pods.clear();
    this.#pool.close();
    this.#certs.stop();
    await this.#config.stop();
    await this.#metrics?.close();
    await this.#admin?.close();
    await new Promise<void>((resolve) => (this.#readiness ? this.#readiness.close(() => resolve()) : resolve()));
  }

  async #addPod(info: PodHandoffAdd, netnsFd: number, persist: boolean): Promise<void> {
    const key = `${info.namespace}/${info.name}`;
    const previous = this.#pods.get(info.uid);
    if (previous) {
      // A repeated ADD (the runtime retried): keep serving with the new netns handle.
      await previous.proxy.stop(0);
      closeFd(previous.netnsFd);
      this.#pods.delete(info.uid);
    }
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
    this.#pods.set(info.uid, { info, netnsFd, proxy });
    if (persist) await this.#records.save(info);
    log.info('pod added', { pod: key, uid: info.uid, ips: info.ips.join(','), serviceAccount: info.serviceAccount });
  }

  async #removePod(uid: string): Promise<void> {
    const served = this.#pods.get(uid);
    await this.#records.remove(uid);
    if (!served) return;
    this.#pods.delete(uid);
    await served.proxy.stop(0);
    closeFd(served.netnsFd);
    const { namespace, serviceAccount } = served.info;
    const stillUsed = [...this.#pods.values()].some((p) => p.info.namespace === namespace && p.info.serviceAccount === serviceAccount);
    if (!stillUsed) this.#certs.forget({ namespace, serviceAccount });
    log.info('pod removed', { pod: `${served.info.namespace}/${served.info.name}`, uid });
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

  #startReadiness(): Promise<Server> {
    const server = createServer((req, res) => {
      if (req.url === '/healthz/ready') {
        const ok = this.#ready;
        res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ready\n' : 'starting\n');
        return;
      }
      res.writeHead(404).end();
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.#opts.readinessPort ?? PORTS.readiness, this.#opts.readinessHost ?? '0.0.0.0', () => resolve(server));
    });
  }
}
