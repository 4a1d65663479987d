/**
 * The nodes' network: a host bridge `<instance>0`, one netns per node attached to it by a veth pair,
 * routes between the nodes for their pod CIDRs, and a host iptables chain that lets bridge traffic
 * through a FORWARD policy of DROP. Every object is recorded in the ledger before it is relied on.
 */
import { readdirSync } from 'node:fs';
import { bridgeName, hostBridgeIp, hostChainName, nodeInfo, type NodeInfo } from './instance.ts';
import type { Ledger, LedgerData } from './ledger.ts';
import { must, runCmd, tryCmd } from './sh.ts';

export interface NetworkPlan { instance: string; index: number; nodes: number }

export function planNodes(p: NetworkPlan): NodeInfo[] {
  return Array.from({ length: p.nodes }, (_, i) => nodeInfo(p.instance, p.index, i + 1));
}

async function nsSysctl(netns: string, settings: string[]): Promise<void> {
  await must('ip', ['netns', 'exec', netns, 'sysctl', '-q', '-w', ...settings]);
}

export async function createNetwork(p: NetworkPlan, ledger: Ledger): Promise<NodeInfo[]> {
  const br = bridgeName(p.instance);
  const hostIp = hostBridgeIp(p.index);
  const nodes = planNodes(p);
  ledger.addLink(br);
  await must('ip', ['link', 'add', br, 'type', 'bridge']);
  await must('ip', ['addr', 'add', `${hostIp}/24`, 'dev', br]);
  await must('ip', ['link', 'set', br, 'up']);

  // FORWARD may be DROP (docker does that): accept what enters or leaves our bridge, in our own chain.
  const chain = hostChainName(p.instance);
  const jumps = [['FORWARD', '-i', br, '-j', chain], ['FORWARD', '-o', br, '-j', chain]];
  ledger.addHostChain({ table: 'filter', chain, jumps });
  await tryCmd('iptables', ['-w', '-N', chain]);
  await must('iptables', ['-w', '-F', chain]);
  await must('iptables', ['-w', '-A', chain, '-j', 'ACCEPT']);
  for (const j of jumps) await must('iptables', ['-w', '-I', j[0], '1', ...j.slice(1)]);

  await Promise.all(nodes.map(async (n) => {
    ledger.addNetns(n.netns);
    await must('ip', ['netns', 'add', n.netns]);
    await must('ip', ['link', 'add', n.hostVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', n.netns]);
    await must('ip', ['link', 'set', n.hostVeth, 'master', br, 'up']);
    const inNs = (args: string[]) => must('ip', ['-n', n.netns, ...args]);
    await inNs(['link', 'set', 'lo', 'up']);
    await inNs(['addr', 'add', `${n.ip}/24`, 'dev', 'eth0']);
    await inNs(['link', 'set', 'eth0', 'up']);
    await inNs(['route', 'add', 'default', 'via', hostIp]);
    // The pod bridge lives in the node: bridged pod traffic must see iptables (kube-proxy hairpin).
    await nsSysctl(n.netns, ['net.ipv4.ip_forward=1']);
    await tryCmd('ip', ['netns', 'exec', n.netns, 'sysctl', '-q', '-w', 'net.bridge.bridge-nf-call-iptables=1']);
    for (const other of nodes) {
      if (other !== n) await inNs(['route', 'add', other.podCidr, 'via', other.ip, 'dev', 'eth0']);
    }
    // From the host, pods are reachable through their node (handy for debugging; gone with the bridge).
    await must('ip', ['route', 'add', n.podCidr, 'via', n.ip, 'dev', br]);
  }));
  return nodes;
}

/** PIDs of every process inside a netns. */
export async function netnsPids(netns: string): Promise<number[]> {
  const r = await runCmd('ip', ['netns', 'pids', netns]);
  if (r.code !== 0) return [];
  return r.stdout.split(/\s+/).filter(Boolean).map(Number).filter((n) => n > 1 && n !== process.pid);
}

export async function killNetnsProcesses(netns: string): Promise<void> {
  for (let i = 0; i < 20; i++) {
    const pids = await netnsPids(netns);
    if (pids.length === 0) return;
    for (const pid of pids) { try { process.kill(pid, i < 5 ? 'SIGTERM' : 'SIGKILL'); } catch { /* gone */ } }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function netnsExists(name: string): boolean {
  try { return readdirSync('/run/netns').includes(name); } catch { return false; }
}

export async function deleteNetns(name: string): Promise<void> {
  if (!netnsExists(name)) return;
  await killNetnsProcesses(name);
  await tryCmd('ip', ['netns', 'del', name]);
}

/** Remove every host object in the ledger (netns, links, host iptables). Idempotent. */
export async function destroyNetwork(data: LedgerData): Promise<string[]> {
  const problems: string[] = [];
  await Promise.all(data.netns.map((ns) => deleteNetns(ns)));
  for (const ns of data.netns) if (netnsExists(ns)) problems.push(`netns ${ns} still exists`);
  for (const link of data.links) {
    const r = await runCmd('ip', ['link', 'show', link]);
    if (r.code === 0 && !(await tryCmd('ip', ['link', 'del', link]))) problems.push(`cannot delete link ${link}`);
  }
  for (const c of data.hostChains) {
    for (const j of c.jumps) {
      for (let i = 0; i < 10; i++) if (!(await tryCmd('iptables', ['-w', '-t', c.table, '-D', ...j]))) break;
    }
    if ((await runCmd('iptables', ['-w', '-t', c.table, '-S', c.chain])).code === 0) {
      await tryCmd('iptables', ['-w', '-t', c.table, '-F', c.chain]);
      if (!(await tryCmd('iptables', ['-w', '-t', c.table, '-X', c.chain]))) problems.push(`cannot delete iptables chain ${c.chain}`);
    }
  }
  return problems;
}
