/**
 * The background supervisor of one instance (`ambit local up` starts it detached): builds the node
 * network, starts the mesh (unless --no-mesh) and the pod runtime, serves the control socket, and on
 * shutdown removes everything it made.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Server } from 'node:net';
import type { KubeObject } from '../api/k8s.ts';
import { AmbitError, errorMessage } from '../shared/errors.ts';
import { logger } from '../shared/log.ts';
import { nodeConflist } from './cni-exec.ts';
import { serveControl, type ControlRequest } from './control.ts';
import { hostBridgeIp, PACKAGE_ROOT, Paths, stateDirOf, type InstanceInfo, type NodeInfo } from './instance.ts';
import { Ledger } from './ledger.ts';
import { agentSocketPath, LocalMesh } from './mesh.ts';
import { createNetwork } from './network.ts';
import { startKubeControlPlane, type KubeControlPlane } from './kube/control-plane.ts';
import { localKubeDir } from './kube/env.ts';
import { PLUGIN_KUBECONFIG_NAME } from '../cni/installer/plugin-kubeconfig.ts';
import { KubeRuntime } from './kube-runtime.ts';
import { LocalRuntime } from './runtime.ts';
import { must } from './sh.ts';
import { teardownInstance } from './teardown.ts';

const log = logger('local.supervisor');

export interface InstanceFile extends InstanceInfo { pid: number; state: 'starting' | 'ready' | 'stopping' | 'failed'; error?: string; startedAt: string; nodeNames?: string[] }

export async function runSupervisor(info: InstanceInfo): Promise<number> {
  const paths = new Paths(stateDirOf(info.name));
  mkdirSync(paths.logs, { recursive: true });
  const file: InstanceFile = { ...info, pid: process.pid, state: 'starting', startedAt: new Date().toISOString() };
  const writeInfo = () => writeFileSync(paths.instanceFile, JSON.stringify(file, null, 2) + '\n');
  writeInfo();
  const ledger = new Ledger(paths.ledger);
  let runtime: LocalRuntime | KubeRuntime | undefined;
  let kube: KubeControlPlane | undefined;
  let mesh: LocalMesh | undefined;
  let server: Server | undefined;
  let stopping: Promise<void> | undefined;

  const shutdown = (): Promise<void> => {
    stopping ??= (async () => {
      file.state = 'stopping';
      writeInfo();
      log.info('shutting down');
      await runtime?.stop().catch((err) => log.error('pod shutdown failed', { error: errorMessage(err) }));
      await mesh?.stop().catch((err) => log.error('mesh shutdown failed', { error: errorMessage(err) }));
      await kube?.stop().catch((err) => log.error('control plane shutdown failed', { error: errorMessage(err) }));
      const problems = await teardownInstance(paths, { removeStateDir: false });
      for (const p of problems) log.warn('left behind', { what: p });
      server?.close();
      log.info('stopped');
    })();
    return stopping;
  };
  // A bug in one handler must not take the whole instance down (and leave it for `down` to clean).
  process.on('unhandledRejection', (err) => log.error('unhandled rejection', { error: errorMessage(err), stack: (err as Error)?.stack }));
  for (const s of ['SIGTERM', 'SIGINT'] as const) process.on(s, () => void shutdown().then(() => process.exit(0)));

  try {
    const nodes: NodeInfo[] = await createNetwork({ instance: info.name, index: info.index, nodes: info.nodes }, ledger);
    file.nodeNames = nodes.map((n) => n.name);
    const conflistFor = (n: NodeInfo) => nodeConflist({
      podCidr: n.podCidr, podGateway: n.podGateway, ipamDataDir: `${paths.nodeDir(n.name)}/ipam`,
      mesh: !info.mesh ? undefined
        : info.kubernetes ? { agentSocket: agentSocketPath(paths, n.name), kubeconfig: join(paths.cni, PLUGIN_KUBECONFIG_NAME) }
        : { agentSocket: agentSocketPath(paths, n.name), objectStore: paths.objects },
    });
    if (info.kubernetes) {
      // The API server holds the pods; this process is the nodes' kubelet.
      kube = await startKubeControlPlane({ dir: localKubeDir(paths.root) });
      // The mesh's own CRDs, so policies can be applied with kubectl (the controller watches them).
      if (info.mesh) await must(join(kube.kubectlDir, 'kubectl'), ['--kubeconfig', kube.kubeconfig, 'apply', '--server-side', '-k', join(PACKAGE_ROOT, 'controller', 'crds')]);
      runtime = new KubeRuntime({
        instance: info.name, paths, nodes, ledger, kubeconfig: kube.kubeconfig, conflistFor,
        cni: info.mesh ? { listenHost: hostBridgeIp(info.index), caFile: kube.pki.caCert } : undefined,
      });
    } else {
      runtime = new LocalRuntime({ instance: info.name, paths, nodes, ledger, conflistFor });
    }
    // Objects first (nodes, namespace default), so the controller's first snapshot has them.
    await runtime.start();
    if (info.mesh) {
      mesh = new LocalMesh({ paths, nodes, hostIp: hostBridgeIp(info.index), ledger, kubeconfig: kube?.kubeconfig });
      await mesh.start();
    }
    const rt = runtime;
    server = await serveControl(paths.socket, (req) => handle(req, rt, file, shutdown));
  } catch (err) {
    file.state = 'failed';
    file.error = errorMessage(err);
    log.error('start failed', { error: file.error });
    await shutdown();
    file.state = 'failed';
    writeInfo();
    return 1;
  }
  file.state = 'ready';
  writeInfo();
  log.info('ready', { instance: info.name, nodes: info.nodes, mesh: info.mesh, socket: paths.socket });
  await new Promise<void>((resolve) => { server!.on('close', () => resolve()); });
  return 0;
}

async function handle(req: ControlRequest, rt: LocalRuntime | KubeRuntime, file: InstanceFile, shutdown: () => Promise<void>): Promise<Record<string, unknown>> {
  switch (req.op) {
    case 'ping':
      return { instance: file };
    case 'apply': {
      const out = await rt.apply((req.objects ?? []) as KubeObject[], typeof req.waitMs === 'number' ? req.waitMs : undefined);
      await rt.settle();
      return { ...out };
    }
    case 'delete':
      return { results: await rt.delete((req.objects ?? []) as KubeObject[]) };
    case 'get': {
      const kind = String(req.kind);
      const ns = typeof req.namespace === 'string' ? req.namespace : undefined;
      if (rt instanceof KubeRuntime) return { items: await rt.get(kind, ns) };
      return { items: kind === 'Node' ? await nodeObjects(rt) : rt.list(kind, ns) };
    }
    case 'pod': {
      const p = rt.pod(String(req.namespace), String(req.name));
      if (!p) throw new AmbitError('LOCAL_NOT_FOUND', `pod ${String(req.namespace)}/${String(req.name)} not found`);
      return { netns: p.sandbox?.netns, phase: p.phase, podIP: p.podIP, node: p.node.name, containers: p.pod.spec.containers.map((c) => c.name), logs: p.containers.map((c) => c.spec.logFile) };
    }
    case 'shutdown':
      // Answer after the clean-up, then exit.
      await shutdown();
      setTimeout(() => process.exit(0), 50);
      return {};
    default:
      throw new AmbitError('LOCAL_BAD_REQUEST', `unknown control operation "${req.op}"`);
  }
}

async function nodeObjects(rt: LocalRuntime): Promise<KubeObject[]> {
  const out: KubeObject[] = [];
  for (const n of rt.nodes) {
    const o = await rt.store.get('Node', undefined, n.name);
    if (o) out.push({ ...o, status: { ...(o.status as object), pods: rt.podCount(n.name) } });
  }
  return out;
}
