/**
 * The in-pod redirection (Istio ambient's in-pod mode, shared/REFERENCE.md), installed inside a
 * pod's network namespace: own chains AMBIT_PRERT / AMBIT_OUTPUT in mangle and nat, jumped to from
 * PREROUTING / OUTPUT, plus policy routing for connections the agent delivers into the pod.
 *
 * Used by the CNI plugin and (runtime enrollment) by the node agent, so everything is async.
 * `nsenter --net=<path>` works for any netns path (named netns, /proc/PID/ns/net, a bind mount).
 * Each table is written with one `iptables-restore --noflush` transaction, so a table never holds
 * half of our rules; declaring a chain flushes it, and the jumps are only added when missing, so
 * install is idempotent. Rule texts are written exactly as iptables-save prints them, so check()
 * can compare lines.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { CONN_MARK, PORTS, POLICY_ROUTE_TABLE, PROBE_SNAT_IP, SOCKET_MARK, SOCKET_MARK_MASK } from '../api/constants.ts';
import { AmbitError, isAmbitError } from '../shared/errors.ts';

export const CHAIN_PRERT = 'AMBIT_PRERT';
export const CHAIN_OUTPUT = 'AMBIT_OUTPUT';
/** ip rule priority, just before `main` (32766) like Istio. */
export const RULE_PREF = 32764;

const hex = (n: number) => `0x${n.toString(16)}`;
const MARK = `${hex(SOCKET_MARK)}/${hex(SOCKET_MARK_MASK)}`;
const CMARK = `${hex(CONN_MARK)}/${hex(SOCKET_MARK_MASK)}`;
/** `--syn` as iptables-save prints it. */
const SYN = '--tcp-flags FIN,SYN,RST,ACK SYN';

type Family = 4 | 6;
type Table = 'mangle' | 'nat';
const TABLES: Table[] = ['mangle', 'nat'];
const JUMPS: [string, string][] = [['PREROUTING', CHAIN_PRERT], ['OUTPUT', CHAIN_OUTPUT]];

/** The rules of our chains, per family and table, in iptables-save's canonical form. */
export function chainRules(family: Family): Record<Table, string[]> {
  const loopback = family === 4 ? '127.0.0.1/32' : '::1/128';
  const nat = [
    // kubelet probes arrive SNATed to this address on the node; let them reach the app directly.
    ...(family === 4 ? [`-A ${CHAIN_PRERT} -s ${PROBE_SNAT_IP}/32 -p tcp -j ACCEPT`] : []),
    // Redirect on SYN only: when the rules arrive in a running pod (runtime enrollment) conntrack
    // may start tracking there and pick up open connections mid-stream; their first packet seen
    // then is not a SYN, so it gets no NAT and the connection goes on as it was.
    `-A ${CHAIN_PRERT} ! -d ${loopback} -p tcp -m tcp ! --dport ${PORTS.hbone} ${SYN} -m mark ! --mark ${MARK} -j REDIRECT --to-ports ${PORTS.inboundPlaintext}`,
    `-A ${CHAIN_OUTPUT} -m connmark --mark ${CMARK} -j ACCEPT`,
    `-A ${CHAIN_OUTPUT} -o lo -j ACCEPT`,
    `-A ${CHAIN_OUTPUT} ! -d ${loopback} -p tcp -m tcp ${SYN} -m mark ! --mark ${MARK} -j REDIRECT --to-ports ${PORTS.outbound}`,
  ];
  const mangle = [
    `-A ${CHAIN_PRERT} -m mark --mark ${MARK} -j CONNMARK --set-xmark ${CMARK}`,
    `-A ${CHAIN_OUTPUT} -m connmark --mark ${CMARK} -j CONNMARK --restore-mark --nfmask ${hex(SOCKET_MARK_MASK)} --ctmask ${hex(SOCKET_MARK_MASK)}`,
  ];
  return { mangle, nat };
}

// --wait: with the legacy backend the xtables lock is host-wide (not per netns), and pods start
// in parallel; nft ignores it.
const RESTORE_ARGS = ['--wait=5', '--noflush'];
const jumpLine = (from: string, chain: string) => `-A ${from} -j ${chain}`;
const ruleSpec = ['fwmark', CMARK, 'lookup', String(POLICY_ROUTE_TABLE), 'pref', String(RULE_PREF)];
const routeSpec = (family: Family) => ['local', family === 4 ? '0.0.0.0/0' : '::/0', 'dev', 'lo', 'table', String(POLICY_ROUTE_TABLE)];

interface RunResult { stdout: string; stderr: string; code: number }

function run(netnsPath: string, argv: string[], input?: string): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile('nsenter', [`--net=${netnsPath}`, '--', ...argv], { encoding: 'utf8', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 127) : 0;
      resolve({ stdout, stderr: stderr || (err && code === 127 ? err.message : ''), code });
    });
    // The child may exit before reading (e.g. nsenter on a netns that is gone): not our error.
    child.stdin?.on('error', () => {});
    child.stdin?.end(input ?? '');
  });
}

// `ip -batch` takes no per-line family option: one batch per family, one process for both.
const IP_BATCH_SCRIPT = `[ -z "$1" ] || printf '%s' "$1" | ip -4 -batch - || exit $?; [ -z "$2" ] || printf '%s' "$2" | ip -6 -batch -`;
async function ipBatch(netnsPath: string, batch: Record<Family, string>): Promise<RunResult | undefined> {
  if (!batch[4] && !batch[6]) return undefined;
  return run(netnsPath, ['sh', '-c', IP_BATCH_SCRIPT, 'sh', batch[4], batch[6]]);
}

/** What is in the netns now: per family, the save output by table, and our ip rules/routes. */
interface Snapshot {
  tables: Record<Family, Record<string, string[]>>;
  rules: Record<Family, number>;     // how many of our ip rules
  routes: Record<Family, boolean>;   // our local route in table 100
}

// One process for the whole read side keeps install/remove cheap. IPv6 is skipped (printed as
// empty) when the caller only cares about IPv4, e.g. installing for an IPv4-only pod.
const SEP = 'echo @@AMBIT@@';
function snapshotScript(v6: boolean): string {
  const six = (cmd: string) => (v6 ? `${cmd} 2>/dev/null` : 'true');
  return [
    'iptables-save', SEP, six('ip6tables-save'), SEP,
    `ip -4 rule show pref ${RULE_PREF}`, SEP, six(`ip -6 rule show pref ${RULE_PREF}`), SEP,
    `ip -4 route show table ${POLICY_ROUTE_TABLE} 2>/dev/null`, SEP, six(`ip -6 route show table ${POLICY_ROUTE_TABLE}`),
  ].join('; ');
}

function parseSave(text: string): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  let table: string[] | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('*')) out[line.slice(1)] = table = [];
    else if (line.startsWith(':') || line.startsWith('-A ')) table?.push(line);
  }
  return out;
}

function netnsGone(netnsPath: string, r: RunResult): boolean {
  return !existsSync(netnsPath) || /^nsenter: .*(No such file)/m.test(r.stderr);
}

function notANetns(netnsPath: string, r: RunResult): AmbitError | undefined {
  if (!/^nsenter: /m.test(r.stderr)) return undefined;
  return new AmbitError('CNI_NETNS_INVALID', `${netnsPath} cannot be entered as a network namespace: ${r.stderr.trim()}`, { details: { netnsPath } });
}

async function snapshot(netnsPath: string, v6 = true): Promise<Snapshot | undefined> {
  if (!existsSync(netnsPath)) return undefined;
  const r = await run(netnsPath, ['sh', '-c', snapshotScript(v6)]);
  if (r.code !== 0 && netnsGone(netnsPath, r)) return undefined;
  if (r.code !== 0) { const bad = notANetns(netnsPath, r); if (bad) throw bad; }
  const parts = r.stdout.split('@@AMBIT@@\n');
  if (parts.length !== 6) {
    throw new AmbitError('CNI_RULES_READ', `cannot read the rules in netns ${netnsPath}: ${r.stderr.trim() || `exit ${r.code}`}; check that iptables, ip6tables, iproute2 and nsenter are installed`);
  }
  const countRules = (t: string) => t.split('\n').filter((l) => l.includes(`lookup ${POLICY_ROUTE_TABLE}`) && l.includes('fwmark 0x111/0xfff')).length;
  const hasRoute = (t: string, dst: string) => t.split('\n').some((l) => l.startsWith(`local ${dst} dev lo`));
  return {
    tables: { 4: parseSave(parts[0]!), 6: parseSave(parts[1]!) },
    rules: { 4: countRules(parts[2]!), 6: countRules(parts[3]!) },
    routes: { 4: hasRoute(parts[4]!, 'default') || hasRoute(parts[4]!, '0.0.0.0/0'), 6: hasRoute(parts[5]!, 'default') || hasRoute(parts[5]!, '::/0') },
  };
}

const hasChain = (lines: string[] | undefined, chain: string) => !!lines?.some((l) => l.startsWith(`:${chain} `));
const count = (lines: string[] | undefined, line: string) => lines?.filter((l) => l === line).length ?? 0;

function failed(what: string, netnsPath: string, r: RunResult): AmbitError {
  return new AmbitError('CNI_RULES_FAILED', `cannot ${what} in netns ${netnsPath}: ${r.stderr.trim() || `exit ${r.code}`}`, { details: { netnsPath, exitCode: r.code } });
}

function upToDate(lines: string[] | undefined, want: string[]): boolean {
  if (!lines) return false;
  for (const [from, chain] of JUMPS) if (count(lines, jumpLine(from, chain)) !== 1) return false;
  for (const chain of [CHAIN_PRERT, CHAIN_OUTPUT]) {
    const prefix = `-A ${chain} `;
    const have = lines.filter((l) => l.startsWith(prefix));
    const expected = want.filter((l) => l.startsWith(prefix));
    if (have.length !== expected.length || have.some((l, i) => l !== expected[i])) return false;
  }
  return true;
}

export interface InstallOptions { ipv6?: boolean }

/**
 * Installs (or completes) the redirection. On failure everything Ambit has in the netns is removed
 * again, so the pod is never left half-redirected; throws AmbitError CNI_RULES_FAILED.
 */
export async function install(netnsPath: string, opts: InstallOptions = {}): Promise<void> {
  const snap = await snapshot(netnsPath, !!opts.ipv6);
  if (!snap) throw new AmbitError('CNI_NETNS_GONE', `network namespace ${netnsPath} does not exist (the pod sandbox is gone?)`);
  const families: Family[] = opts.ipv6 ? [4, 6] : [4];
  try {
    for (const family of families) {
      const rules = chainRules(family);
      // Already exactly in place (a repeated ADD): rewriting would only cost an nft commit.
      if (TABLES.every((table) => upToDate(snap.tables[family][table], rules[table]))) continue;
      let input = '';
      for (const table of TABLES) {
        const existing = snap.tables[family][table];
        input += `*${table}\n:${CHAIN_PRERT} - [0:0]\n:${CHAIN_OUTPUT} - [0:0]\n`;
        for (const [from, chain] of JUMPS) if (count(existing, jumpLine(from, chain)) === 0) input += jumpLine(from, chain) + '\n';
        input += rules[table].join('\n') + '\nCOMMIT\n';
      }
      const r = await run(netnsPath, [family === 4 ? 'iptables-restore' : 'ip6tables-restore', ...RESTORE_ARGS], input);
      if (r.code !== 0) throw failed(`install the IPv${family} redirection rules`, netnsPath, r);
    }
    const batch: Record<Family, string> = { 4: '', 6: '' };
    for (const family of families) {
      if (snap.rules[family] === 0) batch[family] += ['rule', 'add', ...ruleSpec].join(' ') + '\n';
      if (!snap.routes[family]) batch[family] += ['route', 'replace', ...routeSpec(family)].join(' ') + '\n';
    }
    // Redirected connections and table 100 are delivered via lo, and `ip -6 route ... dev lo`
    // is refused while lo is down. Runtimes bring lo up anyway (loopback plugin); make sure.
    if (batch[4] || batch[6]) batch[4] = 'link set dev lo up\n' + batch[4];
    const r = await ipBatch(netnsPath, batch);
    if (r && r.code !== 0) throw failed('install the policy routing (ip rule/route table 100)', netnsPath, r);
  } catch (err) {
    await remove(netnsPath).catch(() => {});
    throw err;
  }
}

export interface RemoveResult { netnsGone: boolean; removed: number }

/** Removes every Ambit chain, jump, ip rule and route in the netns. A missing netns is fine. */
export async function remove(netnsPath: string): Promise<RemoveResult> {
  let snap: Snapshot | undefined;
  try {
    snap = await snapshot(netnsPath);
  } catch (err) {
    // Not a netns (any more): there is nothing of ours to remove.
    if (isAmbitError(err, 'CNI_NETNS_INVALID')) return { netnsGone: true, removed: 0 };
    throw err;
  }
  if (!snap) return { netnsGone: true, removed: 0 };
  let removed = 0;
  for (const family of [4, 6] as Family[]) {
    let input = '';
    for (const table of TABLES) {
      const lines = snap.tables[family][table];
      let body = '';
      for (const [from, chain] of JUMPS) {
        for (let i = count(lines, jumpLine(from, chain)); i > 0; i--) body += `-D ${from} -j ${chain}\n`;
      }
      for (const chain of [CHAIN_PRERT, CHAIN_OUTPUT]) if (hasChain(lines, chain)) body += `-F ${chain}\n-X ${chain}\n`;
      if (body) {
        input += `*${table}\n${body}COMMIT\n`;
        removed++;
      }
    }
    if (!input) continue;
    const r = await run(netnsPath, [family === 4 ? 'iptables-restore' : 'ip6tables-restore', ...RESTORE_ARGS], input);
    if (r.code !== 0 && !netnsGone(netnsPath, r)) throw failed(`remove the IPv${family} redirection rules`, netnsPath, r);
  }
  const batch: Record<Family, string> = { 4: '', 6: '' };
  for (const family of [4, 6] as Family[]) {
    for (let i = snap.rules[family]; i > 0; i--) batch[family] += ['rule', 'del', ...ruleSpec].join(' ') + '\n';
    if (snap.routes[family]) batch[family] += ['route', 'del', ...routeSpec(family)].join(' ') + '\n';
  }
  const r = await ipBatch(netnsPath, batch);
  if (r) {
    removed++;
    if (r.code !== 0 && !netnsGone(netnsPath, r)) throw failed('remove the policy routing (ip rule/route table 100)', netnsPath, r);
  }
  return { netnsGone: false, removed };
}

/** What is missing (empty when all is in place), e.g. "IPv4 nat: -A AMBIT_OUTPUT -o lo -j ACCEPT". */
export async function check(netnsPath: string, opts: InstallOptions = {}): Promise<string[]> {
  const snap = await snapshot(netnsPath, !!opts.ipv6);
  if (!snap) return [`network namespace ${netnsPath}`];
  const missing: string[] = [];
  for (const family of (opts.ipv6 ? [4, 6] : [4]) as Family[]) {
    const rules = chainRules(family);
    for (const table of TABLES) {
      const lines = snap.tables[family][table];
      const want = [...JUMPS.map(([from, chain]) => jumpLine(from, chain)), ...rules[table]];
      for (const line of want) if (count(lines, line) === 0) missing.push(`IPv${family} ${table}: ${line}`);
    }
    if (snap.rules[family] === 0) missing.push(`IPv${family} ip rule ${ruleSpec.join(' ')}`);
    if (!snap.routes[family]) missing.push(`IPv${family} route ${routeSpec(family).join(' ')}`);
  }
  return missing;
}

/** True when any Ambit chain, rule or route is present (used by DEL and by tests). */
export async function present(netnsPath: string): Promise<boolean> {
  const snap = await snapshot(netnsPath);
  if (!snap) return false;
  for (const family of [4, 6] as Family[]) {
    if (snap.rules[family] > 0 || snap.routes[family]) return true;
    for (const table of TABLES) if (hasChain(snap.tables[family][table], CHAIN_PRERT) || hasChain(snap.tables[family][table], CHAIN_OUTPUT)) return true;
  }
  return false;
}
