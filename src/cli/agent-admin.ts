/**
 * How the CLI reaches node agents' admin APIs (127.0.0.1:15000 of each agent). In the local mesh
 * that loopback is inside the node's network namespace, so the socket is made there with the
 * native addon and HTTP/1.1 is spoken over it; `--admin HOST:PORT` talks to one agent directly.
 */
import { request } from 'node:http';
import { connect as tcpConnect, type Socket } from 'node:net';
import { PORTS } from '../api/constants.ts';
import { AmbitError, errorMessage } from '../shared/errors.ts';
import { controlRequest } from '../local/control.ts';
import { instanceName, nodeInfo, Paths, stateDirOf } from '../local/instance.ts';
import type { InstanceFile } from '../local/supervisor.ts';

export interface AgentTarget {
  /** Node name (local mesh), or the address given with --admin. */
  label: string;
  host: string;
  port: number;
  /** Network namespace path to connect from (local mesh nodes). */
  netns?: string;
}

const TIMEOUT_MS = 10_000;

/** `HOST:PORT` or `[IPv6]:PORT` of --admin; undefined when malformed. */
export function parseAdminAddress(s: string): { host: string; port: number } | undefined {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(s) ?? /^([^:\s[\]]+):(\d{1,5})$/.exec(s);
  if (!m) return undefined;
  const port = Number(m[2]);
  return port >= 1 && port <= 65535 ? { host: m[1], port } : undefined;
}

/** Usage errors of --admin / --node (CLI_USAGE), checked while parsing the command line. */
export function checkTargetFlags(o: { admin?: string; node?: string }): void {
  if (o.admin === undefined) return;
  if (!parseAdminAddress(o.admin)) throw new AmbitError('CLI_USAGE', `--admin must be HOST:PORT (e.g. 127.0.0.1:${PORTS.admin}), got "${o.admin}"`);
  if (o.node !== undefined) throw new AmbitError('CLI_USAGE', '--node picks a node of the local mesh; with --admin the agent is the one at that address: give one of them');
}

/** The agents to ask: --admin, else the local mesh's nodes (all, or the one --node names). */
export async function agentTargets(o: { admin?: string; node?: string }): Promise<AgentTarget[]> {
  checkTargetFlags(o);
  if (o.admin !== undefined) {
    const a = parseAdminAddress(o.admin)!;
    return [{ label: o.admin, host: a.host, port: a.port }];
  }
  const f = await localInstance();
  const nodes: AgentTarget[] = [];
  for (let n = 1; n <= f.nodes; n++) {
    const info = nodeInfo(f.name, f.index, n);
    nodes.push({ label: info.name, host: '127.0.0.1', port: PORTS.admin, netns: `/run/netns/${info.netns}` });
  }
  if (o.node === undefined) return nodes;
  const picked = nodes.filter((t) => t.label === o.node);
  if (picked.length === 0) throw new AmbitError('CLI_NO_NODE', `no node "${o.node}" in the local mesh (instance "${f.name}"); nodes: ${nodes.map((t) => t.label).join(', ')}`);
  return picked;
}

async function localInstance(): Promise<InstanceFile> {
  const name = instanceName();
  const paths = new Paths(stateDirOf(name));
  try {
    const r = await controlRequest(paths.socket, { op: 'ping' }, 5000);
    const f = r.instance as InstanceFile;
    if (!f.mesh) throw new AmbitError('CLI_NO_MESH', `the local mesh (instance "${name}") runs without agents (--no-mesh): nothing to inspect`);
    return f;
  } catch (err) {
    if (err instanceof AmbitError && err.code === 'LOCAL_NOT_RUNNING') {
      throw new AmbitError('CLI_NO_AGENT', `the local mesh (instance "${name}") is not running: start it with 'ambit local up', or talk to an agent with --admin HOST:PORT`, { cause: err });
    }
    throw err;
  }
}

/** The node of a pod in the local mesh (whose agent explains its connections). */
export async function localPodNode(namespace: string, name: string): Promise<string> {
  const paths = new Paths(stateDirOf(instanceName()));
  const r = await controlRequest(paths.socket, { op: 'pod', namespace, name });
  return String(r.node);
}

/** One admin API request; the JSON answer, or AmbitError with the agent's code and message. */
export async function adminRequest<T>(t: AgentTarget, path: string, method: 'GET' | 'POST' = 'GET'): Promise<T> {
  const where = `the admin API of ${t.netns ? `the agent of ${t.label} (${t.host}:${t.port} in ${t.netns})` : t.label}`;
  let socket: Socket;
  try {
    socket = await openSocket(t);
  } catch (err) {
    const hint = t.netns ? 'is the agent running? (ambit local status; its log is logs/agent-NODE.log in the state dir)' : 'is an agent admin API (port 15000 of the agent) reachable there?';
    throw new AmbitError('CLI_AGENT_UNREACHABLE', `cannot reach ${where}: ${errorMessage(err)}; ${hint}`, { cause: err });
  }
  const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request({ method, path, host: t.host, port: t.port, createConnection: () => socket, timeout: TIMEOUT_MS }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { data += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${TIMEOUT_MS / 1000}s`)));
    req.on('error', (err) => reject(new AmbitError('CLI_AGENT_UNREACHABLE', `${method} ${path} on ${where} failed: ${errorMessage(err)}`, { cause: err })));
    req.end();
  });
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw new AmbitError('CLI_AGENT_BAD_REPLY', `${method} ${path} on ${where} answered ${status} with non-JSON: ${body.slice(0, 200)}`);
  }
  if (status !== 200) {
    const e = (parsed as { error?: { code?: string; message?: string } }).error;
    throw new AmbitError(e?.code ?? 'CLI_AGENT_ERROR', `${t.label}: ${e?.message ?? `HTTP ${status}`}`);
  }
  return parsed as T;
}

async function openSocket(t: AgentTarget): Promise<Socket> {
  if (t.netns) {
    const { connect } = await import('../native/index.ts');
    return connect({ netns: t.netns, host: t.host, port: t.port, timeoutMs: TIMEOUT_MS });
  }
  return new Promise((resolve, reject) => {
    const s = tcpConnect({ host: t.host, port: t.port, timeout: TIMEOUT_MS });
    s.once('connect', () => { s.setTimeout(0); resolve(s); });
    s.once('timeout', () => s.destroy(new Error(`no connection within ${TIMEOUT_MS / 1000}s`)));
    s.once('error', reject);
  });
}
