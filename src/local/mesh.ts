/**
 * The mesh processes of a local instance: the controller (host netns) and one agent per node (in the
 * node netns), started through the `ambit` CLI exactly as an operator would, plus the agents'
 * credentials (issued by the CA the controller then loads). The runtime does not depend on this.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { PORTS } from '../api/constants.ts';
import { AmbitError, errorMessage } from '../shared/errors.ts';
import { logger } from '../shared/log.ts';
import { CertificateAuthority } from '../controller/ca/ca.ts';
import { CLI_MAIN, NODE_BIN, NODE_PRELOAD, type NodeInfo, type Paths } from './instance.ts';
import type { Ledger } from './ledger.ts';
import { SupervisedProcess } from './processes.ts';

const log = logger('local.mesh');


export function agentSocketPath(paths: Paths, node: string): string { return join(paths.nodeDir(node), 'ztunnel.sock'); }

function tail(file: string, lines = 15): string {
  try { return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n'); } catch { return '(no log)'; }
}

function tcpOpen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    s.setTimeout(1000);
    s.on('connect', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
    s.on('timeout', () => { s.destroy(); resolve(false); });
  });
}

export class LocalMesh {
  #paths: Paths;
  #nodes: NodeInfo[];
  #hostIp: string;
  #ledger: Ledger;
  #controller: SupervisedProcess | undefined;
  #agents: SupervisedProcess[] = [];
  #kubeconfig: string | undefined;

  /** With `kubeconfig`, the controller watches that API server instead of the object store. */
  constructor(o: { paths: Paths; nodes: NodeInfo[]; hostIp: string; ledger: Ledger; kubeconfig?: string }) {
    this.#kubeconfig = o.kubeconfig;
    this.#paths = o.paths;
    this.#nodes = o.nodes;
    this.#hostIp = o.hostIp;
    this.#ledger = o.ledger;
  }

  get controllerAddress(): string { return `${this.#hostIp}:${PORTS.controlPlane}`; }

  async start(timeoutMs = 60_000): Promise<void> {
    mkdirSync(this.#paths.ca, { recursive: true, mode: 0o700 });
    const ca = await CertificateAuthority.loadOrCreate(this.#paths.ca);
    for (const n of this.#nodes) {
      const dir = this.#paths.nodeDir(n.name);
      mkdirSync(dir, { recursive: true });
      const c = await ca.issueAgentCredentials(n.name);
      writeFileSync(join(dir, 'agent-cert.pem'), c.certPem);
      writeFileSync(join(dir, 'agent-key.pem'), c.keyPem, { mode: 0o600 });
      writeFileSync(join(dir, 'root-cert.pem'), c.rootsPem);
    }
    const env = { ...process.env };
    this.#controller = new SupervisedProcess({
      label: 'controller',
      command: [NODE_BIN, ...NODE_PRELOAD, CLI_MAIN, 'controller', ...(this.#kubeconfig ? ['--kubeconfig', this.#kubeconfig, '--lease-namespace', 'default'] : ['--manifests', this.#paths.objects]), '--ca-dir', this.#paths.ca, '--listen', this.controllerAddress],
      env, logFile: join(this.#paths.logs, 'controller.log'), restart: 'Always',
    });
    this.#controller.start();
    if (this.#controller.pid) this.#ledger.addPid(this.#controller.pid, this.#paths.root);
    const deadline = Date.now() + timeoutMs;
    while (!(await tcpOpen(this.#hostIp, PORTS.controlPlane))) {
      if (Date.now() > deadline || this.#controller.restarts >= 2) throw new AmbitError('LOCAL_MESH_START', `the controller did not listen on ${this.controllerAddress} (restarts: ${this.#controller.restarts}); its log (${join(this.#paths.logs, 'controller.log')}):\n${tail(join(this.#paths.logs, 'controller.log'))}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    for (const n of this.#nodes) {
      const dir = this.#paths.nodeDir(n.name);
      const agent = new SupervisedProcess({
        label: `agent/${n.name}`, netns: n.netns,
        command: [NODE_BIN, ...NODE_PRELOAD, ...agentNodeFlags(), CLI_MAIN, 'agent', '--node', n.name, '--controller', this.controllerAddress, '--creds-dir', dir, '--run-dir', dir],
        env, logFile: join(this.#paths.logs, `agent-${n.name}.log`), restart: 'Always',
      });
      agent.start();
      this.#agents.push(agent);
    }
    for (const n of this.#nodes) {
      const sock = agentSocketPath(this.#paths, n.name);
      const agent = this.#agents[this.#nodes.indexOf(n)];
      while (!existsSync(sock)) {
        if (Date.now() > deadline || agent.restarts >= 2) {
          const f = join(this.#paths.logs, `agent-${n.name}.log`);
          throw new AmbitError('LOCAL_MESH_START', `the agent of ${n.name} did not open ${sock}; its log (${f}):\n${tail(f)}`);
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    log.info('mesh started', { controller: this.controllerAddress, agents: this.#nodes.length });
  }

  /** Agents first (after the pods are gone), then the controller. */
  async stop(): Promise<void> {
    await Promise.all(this.#agents.map((a) => a.stop(5000).catch((err) => log.warn('cannot stop agent', { error: errorMessage(err) }))));
    if (this.#controller) {
      const pid = this.#controller.pid;
      await this.#controller.stop(5000);
      if (pid) this.#ledger.removePid(pid);
    }
  }
}

/**
 * Node flags for the agents. V8 sizes the young generation by the machine's memory (64 MB
 * semi-spaces here): under connection churn the agent then sat at ~250 MB RSS with 35 MB live;
 * 4 MB keeps it near 110 MB at no measurable throughput cost (bench/README.md). Keep in step with
 * bin/ambit. AMBIT_AGENT_NODE_FLAGS adds more (profiling: `--cpu-prof`, `--trace-gc`, ... which
 * NODE_OPTIONS does not allow); the last of a repeated flag wins.
 */
function agentNodeFlags(): string[] {
  return ['--max-semi-space-size=4', ...(process.env.AMBIT_AGENT_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean)];
}
