/**
 * kube-proxy emulation in one node netns (iptables nat, own chains): ClusterIP:port -> DNAT to a
 * ready endpoint picked at random (statistic mode random), so pods outside the mesh reach services.
 * A pod reaching itself through its service is masqueraded (hairpin), as kube-proxy does.
 */
import { createHash } from 'node:crypto';
import { logger } from '../shared/log.ts';
import { must, runCmd } from './sh.ts';

const log = logger('local.kube-proxy');
const SERVICES = 'AMBIT-SERVICES';
const POSTROUTING = 'AMBIT-POSTROUTING';
const MASQ_MARK = '0x4000/0x4000';

export interface ProxyEndpoint { ip: string; port: number }
export interface ProxyPort { port: number; protocol: string; endpoints: ProxyEndpoint[] }
export interface ProxyService { key: string; clusterIP: string; ports: ProxyPort[] }

function chainId(prefix: string, text: string): string {
  const h = createHash('sha256').update(text).digest('base64url').replace(/[-_]/g, 'x').toUpperCase().slice(0, 16);
  return `${prefix}${h}`;
}

/** The nat rules for a set of services, in iptables-restore syntax (--noflush). Pure, for tests. */
export function renderRules(services: ProxyService[], previousChains: Set<string>): { text: string; chains: Set<string> } {
  const chains = new Set<string>();
  const rules: string[] = [`-A ${POSTROUTING} -m mark --mark ${MASQ_MARK} -j MASQUERADE`];
  for (const svc of [...services].sort((a, b) => a.key.localeCompare(b.key))) {
    for (const p of svc.ports) {
      const proto = p.protocol.toLowerCase();
      if (proto !== 'tcp' && proto !== 'udp') continue;
      if (p.endpoints.length === 0) continue;
      const svcChain = chainId('AMBIT-SVC-', `${svc.key}:${proto}:${p.port}`);
      chains.add(svcChain);
      rules.push(`-A ${SERVICES} -d ${svc.clusterIP}/32 -p ${proto} -m ${proto} --dport ${p.port} -m comment --comment "${svc.key}:${p.port}" -j ${svcChain}`);
      const eps = [...p.endpoints].sort((a, b) => a.ip.localeCompare(b.ip));
      eps.forEach((ep, i) => {
        const sep = chainId('AMBIT-SEP-', `${svc.key}:${proto}:${p.port}:${ep.ip}:${ep.port}`);
        chains.add(sep);
        const left = eps.length - i;
        rules.push(left > 1
          ? `-A ${svcChain} -m statistic --mode random --probability ${(1 / left).toFixed(5)} -j ${sep}`
          : `-A ${svcChain} -j ${sep}`);
        rules.push(`-A ${sep} -s ${ep.ip}/32 -j MARK --set-xmark ${MASQ_MARK}`);
        rules.push(`-A ${sep} -p ${proto} -m ${proto} -j DNAT --to-destination ${ep.ip}:${ep.port}`);
      });
    }
  }
  const stale = [...previousChains].filter((c) => !chains.has(c));
  const lines = ['*nat', `:${SERVICES} - [0:0]`, `:${POSTROUTING} - [0:0]`];
  for (const c of [...chains, ...stale]) lines.push(`:${c} - [0:0]`);
  lines.push(...rules);
  for (const c of stale) lines.push(`-X ${c}`);
  lines.push('COMMIT', '');
  return { text: lines.join('\n'), chains };
}

export class KubeProxy {
  readonly netns: string;
  #chains = new Set<string>();
  #pending: ProxyService[] | undefined;
  #running: Promise<void> | undefined;

  constructor(netns: string) {
    this.netns = netns;
  }

  /** Our chains and the jumps to them from the built-in nat chains. */
  async init(): Promise<void> {
    await this.#restore(renderRules([], new Set()).text);
    for (const [chain, target] of [['PREROUTING', SERVICES], ['OUTPUT', SERVICES], ['POSTROUTING', POSTROUTING]]) {
      const check = await runCmd('ip', ['netns', 'exec', this.netns, 'iptables', '-w', '-t', 'nat', '-C', chain, '-j', target]);
      if (check.code !== 0) await must('ip', ['netns', 'exec', this.netns, 'iptables', '-w', '-t', 'nat', '-A', chain, '-j', target]);
    }
  }

  /** Bring the rules to `services`. Calls coalesce: only the latest set is applied. */
  sync(services: ProxyService[]): Promise<void> {
    this.#pending = services;
    this.#running ??= (async () => {
      try {
        while (this.#pending) {
          const next = this.#pending;
          this.#pending = undefined;
          const { text, chains } = renderRules(next, this.#chains);
          try {
            await this.#restore(text);
            this.#chains = chains;
          } catch (err) {
            log.error('cannot program service rules', { netns: this.netns, error: err });
          }
        }
      } finally {
        this.#running = undefined;
      }
    })();
    return this.#running;
  }

  async #restore(text: string): Promise<void> {
    await must('ip', ['netns', 'exec', this.netns, 'iptables-restore', '-w', '--noflush'], { input: text });
  }
}
