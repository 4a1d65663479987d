/**
 * `ambit local ...`: a whole mesh on this machine. `up` starts a background supervisor (nodes and
 * pods in network namespaces); the other commands talk to it over its control socket.
 */
import { spawn } from 'node:child_process';
import { accessSync, closeSync, constants, existsSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseManifests, readManifestPath, type ManifestError } from '../api/manifests.ts';
import type { KubeObject, Pod, Service } from '../api/k8s.ts';
import { AmbitError, errorMessage } from '../shared/errors.ts';
import { controlRequest } from '../local/control.ts';
import { deploymentsTable, genericTable, nodesTable, podsTable, servicesTable } from '../local/format.ts';
import {
  bridgeName, CLI_MAIN, CNI_BIN_DIR, hostBridgeIp, instanceName, MAX_NODES, NODE_BIN, NODE_PRELOAD, PACKAGE_ROOT, Paths, pickIndex, stateDirOf,
} from '../local/instance.ts';
import { kubeBinaries } from '../local/kube/binaries.ts';
import { kubeShellEnv, localKubeconfig } from '../local/kube/env.ts';
import type { ApplyOutcome, ObjectResult } from '../local/runtime.ts';
import type { InstanceFile } from '../local/supervisor.ts';

const USAGE = `usage: ambit local <command> [flags]

commands:
  up [--nodes N] [--no-mesh] [--kubernetes]
                                    start the local mesh in the background (default 2 nodes);
                                    --kubernetes: pods come from a real API server (kubectl works)
  down                              stop it and remove everything it created
  status                            is it running? nodes, mesh, state dir
  apply -f FILE|DIR|-               create or update objects (Namespace, Pod, Deployment, Service, ...)
  delete -f FILE|DIR|-              delete the objects named in the manifests
  get nodes|pods|services|deployments|namespaces [-n NS | -A] [-o wide|json]
  exec NS/POD [-c C] -- CMD...      run a command in a pod's network namespace
  logs NS/POD [-c C] [-f]           print a container's log
  kubeconfig                        print the kubeconfig path of the instance's API server (--kubernetes)
  env                               shell lines for eval: KUBECONFIG and the matching kubectl on PATH

Run as root on Linux. AMBIT_LOCAL_INSTANCE=<name> runs a separate instance (state /run/ambit/<name>).
Example: ambit local up && ambit local apply -f ${PACKAGE_ROOT}/docs/examples/demo.yaml
`;

const out = (s: string) => process.stdout.write(s);
const err = (s: string) => process.stderr.write(s);

export async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') { out(USAGE); return cmd === undefined ? 2 : 0; }
  if (rest.includes('--help') || rest.includes('-h')) { out(USAGE); return 0; }
  switch (cmd) {
    case 'up': return up(rest);
    case 'down': return down(rest);
    case 'status': return status();
    case 'apply': return applyOrDelete('apply', rest);
    case 'delete': return applyOrDelete('delete', rest);
    case 'get': return get(rest);
    case 'exec': return exec(rest);
    case 'logs': return logs(rest);
    case 'kubeconfig': return kubeconfigPath();
    case 'env': return kubeEnv();
    case '__supervise': return supervise(rest);
    default:
      err(`ambit local: unknown command "${cmd}"\n\n${USAGE}`);
      return 2;
  }
}

function requireRootLinux(): void {
  if (process.platform !== 'linux') {
    throw new AmbitError('LOCAL_NEEDS_LINUX', `ambit local needs Linux (network namespaces, veth, bridges, iptables); this is ${process.platform}. Run it in a Linux VM or container with CAP_NET_ADMIN and CAP_SYS_ADMIN.`);
  }
  if (process.getuid?.() !== 0) {
    throw new AmbitError('LOCAL_NEEDS_ROOT', 'ambit local needs root (it creates network namespaces, a bridge and iptables rules): run it with sudo');
  }
}

function checkTools(): void {
  for (const p of ['bridge', 'host-local', 'loopback']) {
    try { accessSync(`${CNI_BIN_DIR}/${p}`, constants.X_OK); } catch {
      throw new AmbitError('LOCAL_MISSING_TOOL', `CNI plugin ${CNI_BIN_DIR}/${p} is missing: install the CNI reference plugins (Debian/Ubuntu: apt-get install containernetworking-plugins)`);
    }
  }
}

function ctx(): { name: string; paths: Paths } {
  const name = instanceName();
  return { name, paths: new Paths(stateDirOf(name)) };
}

async function ping(paths: Paths): Promise<InstanceFile | undefined> {
  try {
    const r = await controlRequest(paths.socket, { op: 'ping' }, 5000);
    return r.instance as InstanceFile;
  } catch (e) {
    if (e instanceof AmbitError && e.code === 'LOCAL_NOT_RUNNING') return undefined;
    throw e;
  }
}

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const v = args[i + 1];
  if (v === undefined || v.startsWith('--')) throw new AmbitError('LOCAL_USAGE', `${name} needs a value`);
  return v;
}

function describe(f: InstanceFile, paths: Paths): string {
  const lines = [`instance "${f.name}": ${f.nodes} nodes, mesh ${f.mesh ? 'on' : 'off'}, ${f.kubernetes ? `Kubernetes API server (kubeconfig ${localKubeconfig(paths.root)}), ` : ''}bridge ${bridgeName(f.name)} (${hostBridgeIp(f.index)})`];
  for (let n = 1; n <= f.nodes; n++) lines.push(`  node-${n}  10.250.${f.index}.${n}  pods 10.244.${f.index * 16 + n}.0/24  netns ${f.name}-node-${n}`);
  lines.push(`  state ${paths.root}, logs ${paths.logs}`);
  return lines.join('\n') + '\n';
}

function readTail(file: string, lines = 20): string {
  try { return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n'); } catch { return ''; }
}

async function up(args: string[]): Promise<number> {
  requireRootLinux();
  const nodes = Number(flag(args, '--nodes') ?? '2');
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > MAX_NODES) throw new AmbitError('LOCAL_USAGE', `--nodes must be 1-${MAX_NODES}, got ${flag(args, '--nodes')}`);
  const mesh = !args.includes('--no-mesh');
  const kubernetes = args.includes('--kubernetes');
  if (kubernetes) kubeBinaries(); // names the build script when the binaries are missing
  const timeoutS = Number(flag(args, '--timeout') ?? '120');
  checkTools();
  const { name, paths } = ctx();
  const running = await ping(paths);
  if (running) {
    out(`ambit local is already running: ${describe(running, paths)}`);
    if (running.nodes !== nodes || running.mesh !== mesh || !!running.kubernetes !== kubernetes) out(`(it was started with other flags; run 'ambit local down' first to change them)\n`);
    return 0;
  }
  if (existsSync(paths.root)) {
    const { teardownInstance } = await import('../local/teardown.ts');
    const left = await teardownInstance(paths);
    if (left.length) err(`warning: leftovers of a previous run: ${left.join('; ')}\n`);
  }
  const index = pickIndex(name);
  mkdirSync(paths.logs, { recursive: true });
  // Claim the subnet index now, so a concurrent `up` of another instance picks another one.
  writeFileSync(paths.instanceFile, JSON.stringify({ name, index, nodes, mesh, kubernetes, pid: 0, state: 'starting', startedAt: new Date().toISOString() }) + '\n');
  const fd = openSync(paths.supervisorLog, 'a');
  const child = spawn(NODE_BIN, [...NODE_PRELOAD, CLI_MAIN, 'local', '__supervise', '--instance', name, '--state', paths.root, '--index', String(index), '--nodes', String(nodes), ...(mesh ? [] : ['--no-mesh']), ...(kubernetes ? ['--kubernetes'] : [])], {
    detached: true, stdio: ['ignore', fd, fd], env: { ...process.env, AMBIT_LOCAL_INSTANCE: name }, cwd: '/',
  });
  closeSync(fd);
  let exited: number | null | undefined;
  child.on('exit', (code) => { exited = code; });
  child.unref();
  const deadline = Date.now() + timeoutS * 1000;
  for (;;) {
    await new Promise((r) => setTimeout(r, 150));
    let info: InstanceFile | undefined;
    try { info = JSON.parse(readFileSync(paths.instanceFile, 'utf8')) as InstanceFile; } catch { /* not yet */ }
    if (info?.state === 'ready' && (await ping(paths))) {
      out(`ambit local is up: ${describe(info, paths)}`);
      out(`next: ambit local apply -f ${PACKAGE_ROOT}/docs/examples/demo.yaml\n`);
      return 0;
    }
    const failed = info?.state === 'failed' || exited !== undefined;
    if (failed || Date.now() > deadline) {
      err(`ambit local up failed: ${info?.error ?? (failed ? 'the supervisor exited' : `not ready after ${timeoutS}s`)}\n`);
      err(`supervisor log (${paths.supervisorLog}):\n${readTail(paths.supervisorLog)}\n`);
      try { process.kill(child.pid!, 'SIGTERM'); } catch { /* gone */ }
      await new Promise((r) => setTimeout(r, 500));
      const { teardownInstance } = await import('../local/teardown.ts');
      await teardownInstance(paths);
      return 1;
    }
  }
}

async function supervise(args: string[]): Promise<number> {
  const { runSupervisor } = await import('../local/supervisor.ts');
  const name = flag(args, '--instance') ?? instanceName();
  return runSupervisor({ name, index: Number(flag(args, '--index') ?? '0'), nodes: Number(flag(args, '--nodes') ?? '2'), mesh: !args.includes('--no-mesh'), kubernetes: args.includes('--kubernetes') });
}

async function down(_args: string[]): Promise<number> {
  requireRootLinux();
  const { name, paths } = ctx();
  const running = await ping(paths).catch(() => undefined);
  if (running) {
    try {
      await controlRequest(paths.socket, { op: 'shutdown' }, 120_000);
    } catch (e) {
      err(`warning: supervisor shutdown: ${errorMessage(e)}; cleaning up from the state dir\n`);
    }
    for (let i = 0; i < 100 && processRunning(running.pid); i++) await new Promise((r) => setTimeout(r, 50));
  }
  if (!running && !existsSync(paths.root)) {
    out(`ambit local (instance "${name}") is not running; nothing to remove\n`);
    return 0;
  }
  const { teardownInstance } = await import('../local/teardown.ts');
  const left = await teardownInstance(paths);
  if (left.length > 0) {
    err(`ambit local down: some things could not be removed:\n  ${left.join('\n  ')}\n`);
    return 1;
  }
  out(`ambit local (instance "${name}") is down; everything it created is removed\n`);
  return 0;
}

/** A zombie (exited, not yet reaped by its new parent) counts as exited. */
function processRunning(pid: number): boolean {
  try { return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')); } catch { return false; }
}

async function status(): Promise<number> {
  const { name, paths } = ctx();
  const running = await ping(paths);
  if (!running) { out(`ambit local (instance "${name}") is not running\n`); return 3; }
  out(`running (pid ${running.pid}, since ${running.startedAt}): ${describe(running, paths)}`);
  return 0;
}

// ------------------------------------------------------------------ apply / delete

async function readInputs(args: string[]): Promise<{ objects: KubeObject[]; sources: Map<string, string>; errors: ManifestError[] }> {
  const files: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '-f' || args[i] === '--filename') files.push(args[++i] ?? '');
    else if (args[i].startsWith('--filename=')) files.push(args[i].slice(11));
    else throw new AmbitError('LOCAL_USAGE', `unexpected argument "${args[i]}"; use -f FILE|DIR|-`);
  }
  if (files.length === 0 || files.includes('')) throw new AmbitError('LOCAL_USAGE', 'give the manifests with -f FILE, -f DIR or -f - (stdin)');
  const objects: KubeObject[] = [];
  const errors: ManifestError[] = [];
  const sources = new Map<string, string>();
  for (const f of files) {
    // One file at a time, so an object's errors can name the file it came from.
    let each: string[];
    try { each = f === '-' ? ['-'] : manifestFiles(f); } catch (e) { errors.push({ source: f, message: errorMessage(e) }); continue; }
    for (const file of each) {
      let parsed;
      if (file === '-') parsed = parseManifests(readFileSync(0, 'utf8'), '<stdin>');
      else {
        try { parsed = await readManifestPath(file); } catch (e) { errors.push({ source: file, message: errorMessage(e) }); continue; }
      }
      errors.push(...parsed.errors);
      objects.push(...parsed.objects);
      for (const o of parsed.objects) sources.set(objKey(o.kind, o.metadata.namespace, o.metadata.name), file === '-' ? '<stdin>' : file);
    }
  }
  return { objects, sources, errors };
}

function manifestFiles(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && /\.(ya?ml|json)$/i.test(e.name) && !e.name.startsWith('.'))
    .map((e) => join(e.parentPath, e.name)).sort();
}

function objKey(kind: string, ns: string | undefined, name: string): string {
  return `${kind}/${kind === 'Namespace' ? '' : (ns ?? 'default')}/${name}`;
}

function resourceName(kind: string): string {
  const group: Record<string, string> = { Deployment: 'deployment.apps' };
  return group[kind] ?? kind.toLowerCase();
}

async function applyOrDelete(op: 'apply' | 'delete', args: string[]): Promise<number> {
  const { paths } = ctx();
  const { objects, sources, errors } = await readInputs(args);
  let failed = errors.length > 0;
  for (const e of errors) err(`error: ${e.source}: ${e.message}\n`);
  if (objects.length === 0) {
    if (!failed) err('error: no objects in the given manifests\n');
    return 1;
  }
  const resp = await controlRequest(paths.socket, { op, objects });
  const results = resp.results as ObjectResult[];
  for (const r of results) {
    const label = `${resourceName(r.kind)}/${r.name}`;
    if (r.error) {
      failed = true;
      const src = sources.get(objKey(r.kind, r.namespace, r.name));
      err(`error: ${src ? `${src}: ` : ''}${r.error}\n`);
    } else {
      out(`${label}${r.namespace && r.namespace !== 'default' ? ` (${r.namespace})` : ''} ${r.action}\n`);
      for (const w of r.warnings ?? []) err(`Warning: ${r.kind} ${r.namespace ? `${r.namespace}/` : ''}${r.name}: ${w}\n`);
    }
  }
  for (const f of (resp as unknown as ApplyOutcome).podFailures ?? []) {
    failed = true;
    err(`error: pod ${f.pod} did not start: ${f.message}\n`);
  }
  return failed ? 1 : 0;
}

// ------------------------------------------------------------------ get

const KINDS: Record<string, string> = {
  node: 'Node', nodes: 'Node', no: 'Node', pod: 'Pod', pods: 'Pod', po: 'Pod', service: 'Service', services: 'Service', svc: 'Service',
  deployment: 'Deployment', deployments: 'Deployment', deploy: 'Deployment', namespace: 'Namespace', namespaces: 'Namespace', ns: 'Namespace',
};

async function get(args: string[]): Promise<number> {
  const { paths } = ctx();
  let what: string | undefined;
  let ns = 'default';
  let all = false;
  let output = '';
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '-n' || a === '--namespace') ns = args[++i] ?? '';
    else if (a === '-A' || a === '--all-namespaces') all = true;
    else if (a === '-o' || a === '--output') output = args[++i] ?? '';
    else if (a.startsWith('-o')) output = a.slice(2).replace(/^=/, '');
    else if (!what) what = a;
    else throw new AmbitError('LOCAL_USAGE', `unexpected argument "${a}"`);
  }
  const kind = what ? KINDS[what.toLowerCase()] : undefined;
  if (!kind) throw new AmbitError('LOCAL_USAGE', `get what? one of nodes, pods, services, deployments, namespaces (got "${what ?? ''}")`);
  if (output !== '' && output !== 'wide' && output !== 'json') throw new AmbitError('LOCAL_USAGE', `-o must be wide or json, got "${output}"`);
  const namespaced = kind !== 'Node' && kind !== 'Namespace';
  const resp = await controlRequest(paths.socket, { op: 'get', kind, namespace: namespaced && !all ? ns : undefined });
  const items = resp.items as KubeObject[];
  if (output === 'json') {
    out(JSON.stringify({ apiVersion: 'v1', kind: 'List', items }, null, 2) + '\n');
    return 0;
  }
  if (items.length === 0) {
    err(namespaced && !all ? `No resources found in ${ns} namespace.\n` : 'No resources found\n');
    return 0;
  }
  const o = { allNamespaces: all && namespaced, wide: output === 'wide' };
  if (kind === 'Pod') out(podsTable(items as Pod[], o));
  else if (kind === 'Service') out(servicesTable(items as Service[], o));
  else if (kind === 'Node') out(nodesTable(items, o));
  else if (kind === 'Deployment') {
    const pods = (await controlRequest(paths.socket, { op: 'get', kind: 'Pod', namespace: all ? undefined : ns })).items as Pod[];
    out(deploymentsTable(items, pods, o));
  } else out(genericTable(items, o));
  return 0;
}

// ------------------------------------------------------------------ exec / logs

function podRef(ref: string | undefined): { namespace: string; name: string } {
  if (!ref) throw new AmbitError('LOCAL_USAGE', 'name the pod as NAMESPACE/POD (or POD in namespace default)');
  const [a, b] = ref.split('/');
  return b === undefined ? { namespace: 'default', name: a } : { namespace: a, name: b };
}

interface PodInfo { netns?: string; phase: string; containers: string[]; logs: string[] }

async function exec(args: string[]): Promise<number> {
  const { paths } = ctx();
  const dd = args.indexOf('--');
  const before = dd < 0 ? args : args.slice(0, dd);
  const command = dd < 0 ? [] : args.slice(dd + 1);
  const refs = before.filter((a, i) => !a.startsWith('-') && before[i - 1] !== '-c' && before[i - 1] !== '-n');
  let { namespace, name } = podRef(refs[0]);
  const nsFlag = before.indexOf('-n');
  if (nsFlag >= 0 && !refs[0]?.includes('/')) namespace = before[nsFlag + 1];
  if (command.length === 0) throw new AmbitError('LOCAL_USAGE', 'give the command after --, e.g. ambit local exec demo/sleep -- ip addr');
  const info = await controlRequest(paths.socket, { op: 'pod', namespace, name }) as unknown as PodInfo;
  if (!info.netns) throw new AmbitError('LOCAL_POD_NOT_RUNNING', `pod ${namespace}/${name} has no network namespace (phase ${info.phase})`);
  const env = { ...process.env, PATH: `${PACKAGE_ROOT}/node_modules/.bin:${PACKAGE_ROOT}/bin:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}` };
  return new Promise((resolve) => {
    const child = spawn('ip', ['netns', 'exec', info.netns!, ...command], { stdio: 'inherit', env });
    const fwd = (s: NodeJS.Signals) => () => child.kill(s);
    const handlers = (['SIGINT', 'SIGTERM'] as const).map((s) => { const h = fwd(s); process.on(s, h); return [s, h] as const; });
    child.on('error', (e) => { err(`ambit local exec: ${e.message}\n`); resolve(127); });
    child.on('exit', (code, signal) => {
      for (const [s, h] of handlers) process.off(s, h);
      resolve(code ?? (signal ? 128 + (({ SIGINT: 2, SIGKILL: 9, SIGTERM: 15 } as Record<string, number>)[signal] ?? 1) : 1));
    });
  });
}

async function logs(args: string[]): Promise<number> {
  const { paths } = ctx();
  const c = flag(args, '-c');
  const follow = args.includes('-f') || args.includes('--follow');
  const refs = args.filter((a, i) => !a.startsWith('-') && args[i - 1] !== '-c');
  const { namespace, name } = podRef(refs[0]);
  const info = await controlRequest(paths.socket, { op: 'pod', namespace, name }) as unknown as PodInfo;
  const idx = c === undefined ? 0 : info.containers.indexOf(c);
  if (idx < 0) throw new AmbitError('LOCAL_NOT_FOUND', `pod ${namespace}/${name} has no container "${c}" (containers: ${info.containers.join(', ')})`);
  const file = paths.podLog(namespace, name, info.containers[idx]);
  if (follow) {
    return new Promise((resolve) => {
      const t = spawn('tail', ['-n', '+1', '-F', file], { stdio: 'inherit' });
      t.on('exit', (code) => resolve(code ?? 0));
    });
  }
  try { out(readFileSync(file, 'utf8')); } catch { /* nothing logged yet */ }
  return 0;
}

// ------------------------------------------------------------------ kubeconfig / env

function instanceKubeconfig(): string {
  const { name, paths } = ctx();
  const file = localKubeconfig(paths.root);
  if (!existsSync(file)) {
    throw new AmbitError('LOCAL_NO_KUBE', `the local mesh (instance "${name}") has no Kubernetes API server (no ${file}): start it with 'ambit local up --kubernetes'`);
  }
  return file;
}

function kubeconfigPath(): number {
  out(instanceKubeconfig() + '\n');
  return 0;
}

/** For `eval "$(ambit local env)"`. */
function kubeEnv(): number {
  out(kubeShellEnv({ kubeconfig: instanceKubeconfig(), kubectlDir: kubeBinaries().kubeBinDir }));
  return 0;
}
