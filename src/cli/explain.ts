/**
 * `ambit explain NAMESPACE/POD ADDRESS:PORT`: the route the pod's agent would pick for a connection
 * to ADDRESS:PORT and each policy that allows or denies it, as the agent computes it (/explain runs
 * the data path's own decision code). Local mesh: the agent of the pod's node; or --admin HOST:PORT.
 */
import { isIP } from 'node:net';
import { stringify } from 'yaml';
import { AmbitError, errorMessage } from '../shared/errors.ts';
import type { ExplainEndpoint, Explanation } from '../ztunnel/admin/explain.ts';
import { parseAddr, type Addr } from '../ztunnel/proxy/types.ts';
import { adminRequest, agentTargets, checkTargetFlags, localPodNode } from './agent-admin.ts';
import { parseFlags, parseOutput, type OutputFormat } from './ztunnel-config.ts';

export const USAGE = `usage: ambit explain NAMESPACE/POD ADDRESS:PORT [--admin HOST:PORT] [-o short|json|yaml]

  Shows how the mesh would handle a connection from the pod to ADDRESS:PORT (a service VIP or a pod
  IP): the route the source's agent picks (service -> endpoint, HBONE tunnel or plain TCP), the
  destination's mTLS mode and every AuthorizationPolicy that applies, with the one that decides.

  --admin HOST:PORT  ask the agent at this admin address (default: the agent of the pod's node in
                     the local mesh, AMBIT_LOCAL_INSTANCE)
  -o, --output       short (default), json or yaml`;

export interface ExplainArgs {
  namespace: string;
  pod: string;
  destination: Addr;
  admin?: string;
  output: OutputFormat;
}

const NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

export function parseExplainArgs(argv: string[]): ExplainArgs {
  const { flags, positional } = parseFlags(argv, ['--admin', '-o']);
  if (positional.length !== 2) {
    throw new AmbitError('CLI_USAGE', positional.length < 2
      ? 'give the source pod and the destination: NAMESPACE/POD ADDRESS:PORT'
      : `unexpected argument "${positional[2]}"`);
  }
  const [ref, dst] = positional;
  const [namespace, pod, extra] = ref.split('/');
  if (pod === undefined || extra !== undefined || !NAME.test(namespace) || !NAME.test(pod)) {
    throw new AmbitError('CLI_USAGE', `the source must be NAMESPACE/POD, got "${ref}"`);
  }
  const destination = parseAddr(dst);
  if (!destination || isIP(destination.address) === 0) {
    throw new AmbitError('CLI_USAGE', `ADDRESS:PORT "${dst}" is not valid: give an IP address and a port 1-65535, e.g. 10.96.0.10:80 or [fd00::1]:80 (service VIPs: ambit ztunnel-config services)`);
  }
  const admin = flags.get('--admin');
  checkTargetFlags({ admin });
  return { namespace, pod, destination, admin, output: flags.has('-o') ? parseOutput(flags.get('-o')) : 'short' };
}

const mark = (e: ExplainEndpoint) => (e.allowed ? 'ALLOW' : 'DENY');

/** The human-readable explanation. */
export function formatExplanation(x: Explanation): string {
  const lines: string[] = [];
  const row = (k: string, v: string) => lines.push(`${k.padEnd(13)}${v}`);
  const s = x.source;
  row('source', `${s.namespace}/${s.name}  ${s.addresses.join(',') || '-'}  node ${s.node || '-'}  ${s.protocol === 'HBONE' ? `in the mesh as ${s.identity}` : 'not in the mesh'}`);
  const d = x.destination;
  const dst = d.address.includes(':') ? `[${d.address}]:${d.port}` : `${d.address}:${d.port}`;
  row('destination', d.service ? `${dst}  service ${d.service.namespace}/${d.service.name} (${d.service.hostname})` : dst);
  row('route', `${x.route.kind === 'reject' ? `REJECT ${x.route.code}: ` : ''}${x.route.message ?? ''}  (agent of ${x.node})`);
  for (const e of x.endpoints) {
    const w = e.workload ? `  ${e.workload.namespace}/${e.workload.name}  node ${e.workload.node || '-'}` : '';
    row('endpoint', `${e.target}${w}`);
    const sub = (k: string, v: string) => lines.push(`  ${k.padEnd(11)}${v}`);
    sub('transport', e.transport === 'HBONE'
      ? `HBONE via ${e.hboneAddress}, peer must be ${e.expectedIdentity}; source identity ${s.identity}`
      : e.enforced ? 'plain TCP, arrives on the destination\'s 15006 without a peer identity' : 'plain TCP');
    if (e.mtls) sub('mTLS', `${e.mtls.mode}${e.mtls.policy ? ` (PeerAuthentication ${e.mtls.policy})` : ' (default)'}`);
    if (e.authz) {
      if (e.authz.verdicts.length === 0) sub('policies', 'none apply');
      e.authz.verdicts.forEach((v, i) => {
        const deciding = v.policy === e.decidedBy ? '   <- decides' : '';
        const m = v.matched ? `matches${v.rule !== undefined ? ` rule ${v.rule}` : ''}` : 'no match';
        sub(i === 0 ? 'policies' : '', `${v.action.padEnd(6)} ${v.policy.padEnd(36)} ${m}${deciding}`);
      });
    } else if (e.enforced) sub('policies', 'not evaluated (refused before authorization)');
    sub('result', `${mark(e).padEnd(6)} ${e.reason}`);
  }
  const verdict = { allow: 'ALLOW', deny: 'DENY', reject: 'REJECT', 'depends-on-endpoint': 'DEPENDS ON THE ENDPOINT' }[x.verdict];
  row('verdict', `${verdict.padEnd(6)} ${x.summary}`);
  return lines.join('\n') + '\n';
}

export async function run(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) { process.stdout.write(USAGE + '\n'); return 0; }
  let args: ExplainArgs;
  try {
    args = parseExplainArgs(argv);
  } catch (err) {
    process.stderr.write(`ambit explain: ${errorMessage(err)}\n${USAGE}\n`);
    return 2;
  }
  const node = args.admin === undefined ? await localPodNode(args.namespace, args.pod) : undefined;
  const [target] = await agentTargets({ admin: args.admin, node });
  const q = new URLSearchParams({ src: `${args.namespace}/${args.pod}`, dst: `${args.destination.address.includes(':') ? `[${args.destination.address}]` : args.destination.address}:${args.destination.port}` });
  const x = await adminRequest<Explanation>(target, `/explain?${q}`);
  if (args.output === 'json') process.stdout.write(JSON.stringify(x, null, 2) + '\n');
  else if (args.output === 'yaml') process.stdout.write(stringify(x));
  else process.stdout.write(formatExplanation(x));
  return 0;
}
