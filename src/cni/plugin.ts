/**
 * ambit-cni, the chained CNI plugin: for a pod enrolled in the ambient mesh, ADD installs the
 * in-pod redirection and hands the pod (with its netns fd) to the node agent; DEL undoes both;
 * CHECK verifies the rules. Any other pod passes through untouched apart from a best-effort hand-off
 * (enrolled: false) so that the agent can enroll it later without a restart: this plugin must never
 * break pod start-up for a pod outside the mesh, and fails closed (nothing half-installed) for one inside.
 *
 * The rule module and the native addon are imported lazily so that pass-through calls stay cheap.
 */
import { appendFileSync, existsSync, openSync, closeSync } from 'node:fs';
import { AmbitError, errorMessage, isAmbitError } from '../shared/errors.ts';
import { CNI_VERSION, SUPPORTED_VERSIONS, cniCodeOf, parseConfig, parseEnv, prevResultIps } from './config.ts';
import type { CniEnv, PluginConfig } from './config.ts';
import { ObjectStoreMetadataSource, enrollment } from './pod-metadata.ts';
import type { Enrollment, PodMetadataSource } from './pod-metadata.ts';
import type { PodHandoffAdd, PodHandoffDel } from '../api/pod-handoff.ts';

export const ADD_TIMEOUT_MS = 5000;
/** DEL is best effort towards the agent: do not hold pod teardown for long. */
export const DEL_TIMEOUT_MS = 2000;

export interface CniOutcome { stdout: string; exitCode: number }

export interface CniDeps {
  /** Where pod/namespace labels come from; default: the config's objectStore directory. */
  metadata?(cfg: PluginConfig): PodMetadataSource | undefined;
}

interface Ctx { env: CniEnv | undefined; cfg: PluginConfig | undefined; enrolled?: boolean; note?: string }

/** Runs one CNI invocation. Never throws: errors become the CNI error JSON and exit code 1. */
export async function runCni(env: NodeJS.ProcessEnv, stdin: string, deps: CniDeps = {}): Promise<CniOutcome> {
  const started = process.hrtime.bigint();
  const ctx: Ctx = { env: undefined, cfg: undefined };
  let outcome: CniOutcome;
  try {
    ctx.env = parseEnv(env);
    if (ctx.env.command === 'VERSION') {
      outcome = { stdout: JSON.stringify(versionInfo(stdin)), exitCode: 0 };
    } else {
      ctx.cfg = parseConfig(stdin, ctx.env.command);
      const source = deps.metadata ? deps.metadata(ctx.cfg) : await metadataSource(ctx.cfg);
      if (ctx.env.command === 'ADD') outcome = await cmdAdd(ctx, ctx.env, ctx.cfg, source);
      else if (ctx.env.command === 'DEL') outcome = await cmdDel(ctx, ctx.env, ctx.cfg, source);
      else outcome = await cmdCheck(ctx, ctx.env, ctx.cfg, source);
    }
  } catch (err) {
    outcome = errorOutcome(err, ctx.cfg?.cniVersion ?? versionFromStdin(stdin));
  }
  writeLog(ctx, env, stdin, outcome, Number(process.hrtime.bigint() - started) / 1e6);
  return outcome;
}

async function metadataSource(cfg: PluginConfig): Promise<PodMetadataSource | undefined> {
  if (cfg.kubeconfig) return new (await import('./kube-metadata.ts')).KubeMetadataSource(cfg.kubeconfig);
  if (cfg.objectStore) return new ObjectStoreMetadataSource(cfg.objectStore);
  return undefined;
}

function versionFromStdin(stdin: string): string {
  try {
    const v = (JSON.parse(stdin) as { cniVersion?: unknown }).cniVersion;
    if (typeof v === 'string' && SUPPORTED_VERSIONS.includes(v)) return v;
  } catch { /* fall through */ }
  return CNI_VERSION;
}

function versionInfo(stdin: string): { cniVersion: string; supportedVersions: string[] } {
  return { cniVersion: versionFromStdin(stdin), supportedVersions: SUPPORTED_VERSIONS };
}

function errorOutcome(err: unknown, cniVersion: string): CniOutcome {
  const ambit = isAmbitError(err) ? err : new AmbitError('CNI_INTERNAL', `ambit-cni failed unexpectedly: ${errorMessage(err)}`);
  const body = { cniVersion, code: cniCodeOf(ambit.code), msg: ambit.message, details: `${ambit.code}${ambit.details ? ' ' + JSON.stringify(ambit.details) : ''}` };
  return { stdout: JSON.stringify(body), exitCode: 1 };
}

function passThrough(cfg: PluginConfig): CniOutcome {
  return { stdout: JSON.stringify({ ...cfg.prevResult, cniVersion: cfg.cniVersion }), exitCode: 0 };
}

async function lookup(env: CniEnv, source: PodMetadataSource | undefined): Promise<Enrollment> {
  if (!env.pod) return { enrolled: false, reason: 'CNI_ARGS has no K8S_POD_NAMESPACE/K8S_POD_NAME' };
  if (!source) return { enrolled: false, reason: 'no pod metadata source configured (config field "kubeconfig" or "objectStore")' };
  const [pod, ns] = await Promise.all([source.pod(env.pod.namespace, env.pod.name), source.namespace(env.pod.namespace)]);
  return enrollment(pod, ns);
}

function podUid(env: CniEnv, e: Enrollment): string {
  return env.pod?.uid ?? e.pod?.metadata.uid ?? env.containerId;
}

function requireNetns(env: CniEnv): string {
  const path = env.netns!;
  if (!existsSync(path)) {
    throw new AmbitError('CNI_BAD_ENV', `CNI_NETNS=${path} does not exist; the pod's network namespace must exist before ambit-cni runs`);
  }
  return path;
}

function podMessage(env: CniEnv, e: Enrollment & { pod: NonNullable<Enrollment['pod']> }, ips: string[], netns: string, enrolled: boolean): PodHandoffAdd {
  return {
    op: 'add',
    uid: podUid(env, e),
    name: env.pod!.name,
    namespace: env.pod!.namespace,
    serviceAccount: e.pod.spec?.serviceAccountName || 'default',
    ips,
    netnsPath: netns,
    enrolled,
  };
}

async function cmdAdd(ctx: Ctx, env: CniEnv, cfg: PluginConfig, source: PodMetadataSource | undefined): Promise<CniOutcome> {
  const e = await lookup(env, source);
  ctx.enrolled = e.enrolled;
  if (!e.enrolled) {
    ctx.note = e.reason;
    if (e.pod && env.pod) await handOffNotEnrolled(ctx, env, cfg, { ...e, pod: e.pod });
    return passThrough(cfg);
  }
  const netns = requireNetns(env);
  const ips = prevResultIps(cfg.prevResult);
  const msg = podMessage(env, e, ips, netns, true);
  // Fail fast, before touching the pod, when there is no agent at all.
  if (!existsSync(cfg.agentSocket)) throw unreachable(cfg.agentSocket, 'the socket does not exist');
  const rules = await import('./in-pod-rules.ts');
  await rules.install(netns, { ipv6: ips.some((ip) => ip.includes(':')) });
  try {
    await handOff(cfg.agentSocket, msg, netns, ADD_TIMEOUT_MS);
  } catch (err) {
    // No half-installed state: a pod whose traffic is redirected to listeners nobody opened is dead.
    await rules.remove(netns).catch(() => {});
    throw err;
  }
  return passThrough(cfg);
}

/**
 * A pod outside the mesh is still handed over (enrolled: false, no rules) so that the agent can
 * enroll it at run time when a label changes. Best effort: the pod starts whatever happens here.
 */
async function handOffNotEnrolled(ctx: Ctx, env: CniEnv, cfg: PluginConfig, e: Enrollment & { pod: NonNullable<Enrollment['pod']> }): Promise<void> {
  const netns = env.netns;
  let why: string | undefined;
  if (!netns || !existsSync(netns)) why = `netns ${netns ?? '(none)'} not found`;
  else if (!existsSync(cfg.agentSocket)) why = `${cfg.agentSocket} does not exist`;
  else {
    try {
      await handOff(cfg.agentSocket, podMessage(env, e, prevResultIps(cfg.prevResult), netns, false), netns, DEL_TIMEOUT_MS);
    } catch (err) {
      why = errorMessage(err);
    }
  }
  if (why) ctx.note = `${ctx.note}; agent not told, so a later label change will not enroll the pod until it restarts: ${why}`;
}

function unreachable(socket: string, why: string, cause?: unknown): AmbitError {
  return new AmbitError('CNI_AGENT_UNREACHABLE',
    `cannot reach the Ambit node agent on ${socket} (${why}); check that the node agent is running on this node and that the CNI config "agentSocket" names its socket`,
    { cause });
}

async function request(socket: string, msg: PodHandoffAdd | PodHandoffDel, fds: number[], timeoutMs: number): Promise<void> {
  const [{ seqpacketRequest }, handoff] = await Promise.all([import('../native/index.ts'), import('../api/pod-handoff.ts')]);
  let raw: Buffer;
  try {
    raw = seqpacketRequest(socket, handoff.encodeHandoff(msg), fds, timeoutMs);
  } catch (err) {
    throw unreachable(socket, errorMessage(err), err);
  }
  const reply = handoff.parsePodHandoffReply(raw);
  if (!reply.ok) {
    throw new AmbitError('CNI_AGENT_REFUSED', `the Ambit node agent on ${socket} refused pod ${msg.namespace}/${msg.name}: ${reply.code}: ${reply.message}; check the node agent's log`, { details: { agentCode: reply.code } });
  }
}

async function handOff(socket: string, msg: PodHandoffAdd, netns: string, timeoutMs: number): Promise<void> {
  // The fd travels to the agent, which keeps its own copy; ours is closed right after.
  let fd: number;
  try {
    fd = openSync(netns, 'r');
  } catch (err) {
    throw new AmbitError('CNI_BAD_ENV', `CNI_NETNS=${netns} cannot be opened: ${errorMessage(err)}`);
  }
  try {
    await request(socket, msg, [fd], timeoutMs);
  } finally {
    closeSync(fd);
  }
}

async function cmdDel(ctx: Ctx, env: CniEnv, cfg: PluginConfig, source: PodMetadataSource | undefined): Promise<CniOutcome> {
  let e: Enrollment;
  try {
    e = await lookup(env, source);
  } catch {
    e = { enrolled: false, reason: 'metadata lookup failed' };
  }
  ctx.enrolled = e.enrolled;
  if (env.netns) {
    // Always clean up: rules may also have been installed at run time by the agent.
    const rules = await import('./in-pod-rules.ts');
    const r = await rules.remove(env.netns);
    if (r.netnsGone) ctx.note = 'netns already gone';
  }
  // Tell the agent about every pod: it keeps a record of all of them (runtime enrollment); best effort.
  if (env.pod && existsSync(cfg.agentSocket)) {
    const msg: PodHandoffDel = { op: 'del', uid: podUid(env, e), name: env.pod.name, namespace: env.pod.namespace };
    try {
      await request(cfg.agentSocket, msg, [], DEL_TIMEOUT_MS);
    } catch (err) {
      ctx.note = `agent not told: ${errorMessage(err)}`;
    }
  }
  return { stdout: '', exitCode: 0 };
}

async function cmdCheck(ctx: Ctx, env: CniEnv, cfg: PluginConfig, source: PodMetadataSource | undefined): Promise<CniOutcome> {
  const e = await lookup(env, source);
  ctx.enrolled = e.enrolled;
  if (!e.enrolled) return { stdout: '', exitCode: 0 };
  const netns = requireNetns(env);
  const ips = prevResultIps(cfg.prevResult);
  const rules = await import('./in-pod-rules.ts');
  const missing = await rules.check(netns, { ipv6: ips.some((ip) => ip.includes(':')) });
  if (missing.length > 0) {
    throw new AmbitError('CNI_CHECK_FAILED', `pod ${env.pod!.namespace}/${env.pod!.name} is enrolled but its redirection is incomplete in ${netns}; missing: ${missing.join('; ')}`);
  }
  return { stdout: '', exitCode: 0 };
}

/** The log file even from a config that failed validation (so its error is logged too). */
function logFileOf(ctx: Ctx, stdin: string): string | undefined {
  if (ctx.cfg) return ctx.cfg.logFile;
  try {
    const f = (JSON.parse(stdin) as { logFile?: unknown }).logFile;
    return typeof f === 'string' && f !== '' ? f : undefined;
  } catch {
    return undefined;
  }
}

/** One line per invocation; duration_ms is the time inside the plugin (Node start-up excluded). */
function writeLog(ctx: Ctx, env: NodeJS.ProcessEnv, stdin: string, outcome: CniOutcome, ms: number): void {
  const file = logFileOf(ctx, stdin);
  if (!file) return;
  let result = 'ok';
  if (outcome.exitCode !== 0) {
    try {
      const e = JSON.parse(outcome.stdout) as { code: number; msg: string };
      result = `error code=${e.code} msg=${JSON.stringify(e.msg)}`;
    } catch { result = 'error'; }
  }
  const pod = ctx.env?.pod ? `${ctx.env.pod.namespace}/${ctx.env.pod.name}` : '-';
  const line = `${new Date().toISOString()} command=${env.CNI_COMMAND ?? '-'} container=${env.CNI_CONTAINERID ?? '-'} pod=${pod}` +
    ` enrolled=${ctx.enrolled ?? '-'} result=${result}${ctx.note ? ` note=${JSON.stringify(ctx.note)}` : ''} duration_ms=${ms.toFixed(1)}\n`;
  try {
    appendFileSync(file, line);
  } catch { /* a log file problem must not fail the pod */ }
}
