/**
 * `ambit ztunnel-config workloads|services|certificates|connections|policies|all`: what node agents
 * hold, read from their admin API (/config_dump). Local mesh: every node's agent, or --node; or one
 * agent at --admin HOST:PORT.
 */
import { stringify } from 'yaml';
import { AmbitError, errorMessage } from '../shared/errors.ts';
import type { ConfigDump } from '../ztunnel/admin/config-dump.ts';
import { adminRequest, agentTargets, checkTargetFlags } from './agent-admin.ts';
import { allTables, SECTIONS, TABLES, type AgentDump, type Section } from './ztunnel-tables.ts';

export const USAGE = `usage: ambit ztunnel-config workloads|services|certificates|connections|policies|all
                            [--node NAME] [--admin HOST:PORT] [-o short|json|yaml]

  --node NAME        only the agent of this node of the local mesh (default: every node's agent;
                     with more than one, the AGENT column says which agent a row came from)
  --admin HOST:PORT  ask the agent at this admin address instead (e.g. a port-forward to :15000)
  -o, --output       short (tables, default), json or yaml; one agent gives one object, several a list

The local mesh is the one AMBIT_LOCAL_INSTANCE names (default "ambit"); run as root (the agents'
admin port is inside each node's network namespace).`;

export type OutputFormat = 'short' | 'json' | 'yaml';
export interface ZtunnelConfigArgs {
  what: Section | 'all';
  node?: string;
  admin?: string;
  output: OutputFormat;
}

const WHAT: Record<string, Section | 'all'> = {
  workload: 'workloads', workloads: 'workloads', service: 'services', services: 'services',
  certificate: 'certificates', certificates: 'certificates', certs: 'certificates', secret: 'certificates',
  connection: 'connections', connections: 'connections', policy: 'policies', policies: 'policies', all: 'all',
};

function usageError(msg: string): AmbitError { return new AmbitError('CLI_USAGE', msg); }

/** Reads `-o VALUE`, `-oVALUE`, `-o=VALUE`, `--output VALUE`, `--output=VALUE`. */
export function parseOutput(v: string | undefined): OutputFormat {
  if (v === 'short' || v === 'json' || v === 'yaml') return v;
  throw usageError(`-o must be short, json or yaml, got ${v === undefined ? 'nothing' : `"${v}"`}`);
}

/** Shared by ztunnel-config and explain: flags with values, and the positionals in order. */
export function parseFlags(argv: string[], withValue: string[]): { flags: Map<string, string>; positional: string[] } {
  const flags = new Map<string, string>();
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('-') || a === '-') { positional.push(a); continue; }
    let name = a;
    let value: string | undefined;
    if (a.startsWith('--') && a.includes('=')) {
      name = a.slice(0, a.indexOf('='));
      value = a.slice(a.indexOf('=') + 1);
    } else if (a.startsWith('-o') && a.length > 2 && !a.startsWith('--')) {
      name = '-o';
      value = a.slice(2).replace(/^=/, '');
    }
    const canonical = name === '--output' ? '-o' : name;
    if (!withValue.includes(canonical)) throw usageError(`unknown flag "${a}"`);
    if (name === a) value = argv[++i];
    if (value === undefined || value === '' || (value.startsWith('-') && value.length > 1)) throw usageError(`${name} needs a value`);
    flags.set(canonical, value);
  }
  return { flags, positional };
}

export function parseZtunnelConfigArgs(argv: string[]): ZtunnelConfigArgs {
  const { flags, positional } = parseFlags(argv, ['--node', '--admin', '-o']);
  if (positional.length === 0) throw usageError(`say what to show: one of ${[...SECTIONS, 'all'].join(', ')}`);
  if (positional.length > 1) throw usageError(`unexpected argument "${positional[1]}"`);
  const what = WHAT[positional[0].toLowerCase()];
  if (!what) throw usageError(`unknown subcommand "${positional[0]}": use one of ${[...SECTIONS, 'all'].join(', ')}`);
  const out: ZtunnelConfigArgs = { what, node: flags.get('--node'), admin: flags.get('--admin'), output: flags.has('-o') ? parseOutput(flags.get('-o')) : 'short' };
  checkTargetFlags(out);
  return out;
}

/** What -o json|yaml prints for one agent: the whole dump for `all`, else node + that section. */
export function structured(d: AgentDump, what: Section | 'all'): Record<string, unknown> {
  if (what === 'all') return { ...d.dump };
  const out: Record<string, unknown> = { node: d.dump.node, [what]: d.dump[what] };
  if (what === 'policies') out.peerAuthentications = d.dump.peerAuthentications;
  return out;
}

export function render(dumps: AgentDump[], what: Section | 'all', output: OutputFormat): string {
  if (output === 'short') return what === 'all' ? allTables(dumps) : TABLES[what](dumps);
  const value = dumps.length === 1 ? structured(dumps[0], what) : dumps.map((d) => structured(d, what));
  return output === 'json' ? JSON.stringify(value, null, 2) + '\n' : stringify(value);
}

export async function run(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) { process.stdout.write(USAGE + '\n'); return 0; }
  let args: ZtunnelConfigArgs;
  try {
    args = parseZtunnelConfigArgs(argv);
  } catch (err) {
    process.stderr.write(`ambit ztunnel-config: ${errorMessage(err)}\n${USAGE}\n`);
    return 2;
  }
  const targets = await agentTargets(args);
  const answers = await Promise.allSettled(targets.map((t) => adminRequest<ConfigDump>(t, '/config_dump')));
  const dumps: AgentDump[] = [];
  let failed = 0;
  answers.forEach((a, i) => {
    if (a.status === 'fulfilled') dumps.push({ agent: targets[i].label, dump: a.value });
    else {
      failed++;
      const code = a.reason instanceof AmbitError ? ` [${a.reason.code}]` : '';
      process.stderr.write(`ambit ztunnel-config: ${errorMessage(a.reason)}${code}\n`);
    }
  });
  if (dumps.length > 0) process.stdout.write(render(dumps, args.what, args.output));
  return failed > 0 ? 1 : 0;
}
