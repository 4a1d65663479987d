/**
 * CNI invocation parsing (spec 1.0.0, also 0.3.x/0.4.0 configs): environment variables and the
 * network configuration on stdin. Errors carry the CNI error code the runtime expects.
 */
import { AmbitError } from '../shared/errors.ts';

export const CNI_VERSION = '1.0.0';
export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0'];

/** CNI well-known error codes, and Ambit's own (100+). */
export const CNI_CODES: Record<string, number> = {
  CNI_INCOMPATIBLE_VERSION: 1,
  CNI_BAD_CONFIG: 4,
  CNI_BAD_ENV: 7,
  CNI_AGENT_UNREACHABLE: 11,
  CNI_RULES_FAILED: 100,
  CNI_AGENT_REFUSED: 101,
  HANDOFF_BAD_REPLY: 102,
  CNI_CHECK_FAILED: 103,
  CNI_RULES_READ: 104,
  // Pod metadata from the API server: unreachable is "try again later" (the kubelet retries).
  CNI_KUBE_UNREACHABLE: 11,
  CNI_KUBE_FORBIDDEN: 105,
  CNI_KUBE_BAD_REPLY: 106,
  CNI_KUBECONFIG: 107,
  CNI_NETNS_GONE: 7,
  CNI_NETNS_INVALID: 7,
};
export function cniCodeOf(ambitCode: string): number { return CNI_CODES[ambitCode] ?? 999; }

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION';

export interface CniEnv {
  command: CniCommand;
  containerId: string;
  netns: string | undefined;
  ifname: string;
  args: Record<string, string>;
  /** K8S_POD_* from CNI_ARGS, when the runtime is Kubernetes-like. */
  pod: { namespace: string; name: string; uid: string | undefined } | undefined;
}

export interface PluginConfig {
  cniVersion: string;
  name: string;
  type: string;
  agentSocket: string;
  objectStore: string | undefined;
  /** kubeconfig of the API server that holds the pods (a real cluster); written by `ambit cni-install`. */
  kubeconfig: string | undefined;
  logFile: string | undefined;
  prevResult: Record<string, unknown> | undefined;
}

const badEnv = (msg: string) => new AmbitError('CNI_BAD_ENV', msg);
const badConfig = (msg: string) => new AmbitError('CNI_BAD_CONFIG', msg);

/**
 * `K=V;K=V`. Unknown keys are kept (and ignored by the plugin); a piece without `=` is skipped:
 * failing pod start-up over an argument this plugin does not need would be worse.
 */
export function parseCniArgs(raw: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!raw) return out;
  for (const pair of raw.split(';')) {
    const eq = pair.indexOf('=');
    if (eq > 0) out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

export function parseEnv(env: NodeJS.ProcessEnv): CniEnv {
  const command = env.CNI_COMMAND;
  if (!command) throw badEnv('CNI_COMMAND is not set (expected ADD, DEL, CHECK or VERSION)');
  if (command !== 'ADD' && command !== 'DEL' && command !== 'CHECK' && command !== 'VERSION') {
    throw badEnv(`CNI_COMMAND=${JSON.stringify(command)} is not one of ADD, DEL, CHECK, VERSION`);
  }
  const need = (name: string): string => {
    const v = env[name];
    if (!v) throw badEnv(`${name} is not set; the container runtime must set it for CNI_COMMAND=${command}`);
    return v;
  };
  if (command === 'VERSION') return { command, containerId: '', netns: undefined, ifname: '', args: {}, pod: undefined };
  const containerId = need('CNI_CONTAINERID');
  const ifname = need('CNI_IFNAME');
  // DEL may come after the netns is gone: CNI_NETNS is optional there.
  const netns = command === 'DEL' ? env.CNI_NETNS || undefined : need('CNI_NETNS');
  const args = parseCniArgs(env.CNI_ARGS);
  const pod = args.K8S_POD_NAMESPACE && args.K8S_POD_NAME
    ? { namespace: args.K8S_POD_NAMESPACE, name: args.K8S_POD_NAME, uid: args.K8S_POD_UID || undefined }
    : undefined;
  return { command, containerId, netns, ifname, args, pod };
}

/** Parses stdin. prevResult is required for ADD and CHECK (we are a chained plugin). */
export function parseConfig(stdin: string, command: CniCommand): PluginConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (err) {
    throw badConfig(`the network configuration on stdin is not valid JSON (${(err as Error).message})`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw badConfig('the network configuration on stdin must be a JSON object');
  const o = raw as Record<string, unknown>;
  const str = (field: string, required: boolean): string | undefined => {
    const v = o[field];
    if (v === undefined && !required) return undefined;
    if (typeof v !== 'string' || v === '') throw badConfig(`config field "${field}" must be a non-empty string (got ${JSON.stringify(v) ?? 'nothing'})`);
    return v;
  };
  const cniVersion = str('cniVersion', true)!;
  if (!SUPPORTED_VERSIONS.includes(cniVersion)) {
    throw new AmbitError('CNI_INCOMPATIBLE_VERSION', `config field "cniVersion" is ${JSON.stringify(cniVersion)}; ambit-cni supports ${SUPPORTED_VERSIONS.join(', ')}`);
  }
  const cfg: PluginConfig = {
    cniVersion,
    name: str('name', false) ?? '',
    type: str('type', false) ?? 'ambit-cni',
    agentSocket: '',
    objectStore: str('objectStore', false),
    kubeconfig: str('kubeconfig', false),
    logFile: str('logFile', false),
    prevResult: undefined,
  };
  if (command === 'VERSION') return cfg;
  if (cfg.objectStore && cfg.kubeconfig) throw badConfig('config fields "kubeconfig" and "objectStore" are both set; give one pod metadata source (kubeconfig on a cluster, objectStore for ambit local)');
  cfg.agentSocket = str('agentSocket', true)!;
  if (o.prevResult !== undefined) {
    if (o.prevResult === null || typeof o.prevResult !== 'object' || Array.isArray(o.prevResult)) {
      throw badConfig('config field "prevResult" must be an object (the result of the previous plugin in the chain)');
    }
    cfg.prevResult = o.prevResult as Record<string, unknown>;
  } else if (command === 'ADD' || command === 'CHECK') {
    throw badConfig(`config field "prevResult" is missing: ambit-cni is a chained plugin and must come after an interface plugin (e.g. bridge) in the conflist`);
  }
  return cfg;
}

/** Pod IPs from a prevResult (0.3.x / 0.4.0 / 1.0.0 all use ips[].address "ip/prefix"). */
export function prevResultIps(prev: Record<string, unknown> | undefined): string[] {
  const ips = prev?.ips;
  if (!Array.isArray(ips)) return [];
  const out: string[] = [];
  for (const entry of ips) {
    const addr = (entry as { address?: unknown })?.address;
    if (typeof addr === 'string' && addr !== '') out.push(addr.split('/')[0]!);
  }
  return out;
}
