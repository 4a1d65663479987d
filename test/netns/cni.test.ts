/**
 * ambit-cni executed exactly as a container runtime would (env + stdin -> stdout + exit code),
 * against real network namespaces, real iptables, and a real PodHandoffServer as the agent.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { fstatSync, statSync, mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { PodHandoffServer } from '../../src/ztunnel/pod-handoff-server.ts';
import type { PodHandoffAdd } from '../../src/api/pod-handoff.ts';
import { AmbitError } from '../../src/shared/errors.ts';
import { closeFd } from '../../src/native/index.ts';
import { check, present } from '../../src/cni/in-pod-rules.ts';
import {
  runCni, shortId, netnsAdd, netnsDel, ruleState, hint, tempStore, namespaceObj, podObj, prevResult, inNetns,
} from './cni-helpers.ts';
import type { TempStore } from './cni-helpers.ts';

interface AgentRecord { adds: (PodHandoffAdd & { netnsFd: number; inode: number; netnsInode: number })[]; dels: string[] }

/** The test's node agent: records what it got, checks the fd is the pod's netns, optionally refuses. */
async function startAgent(socketPath: string, refuse = false): Promise<{ server: PodHandoffServer; rec: AgentRecord }> {
  const rec: AgentRecord = { adds: [], dels: [] };
  const server = new PodHandoffServer({
    socketPath,
    onAdd: async (pod) => {
      const inode = fstatSync(pod.netnsFd).ino;
      let netnsInode = -1;
      try { netnsInode = statSync(pod.netnsPath).ino; } catch { /* recorded as -1 */ }
      rec.adds.push({ ...pod, inode, netnsInode });
      if (refuse) throw new AmbitError('TEST_REFUSED', 'this test agent refuses every pod');
      closeFd(pod.netnsFd);
    },
    onDel: async (uid) => { rec.dels.push(uid); },
  });
  await server.start();
  return { server, rec };
}

describe('ambit-cni', () => {
  const id = shortId();
  const nsName = `ambt-c${id}`;
  let netns = '';
  let store: TempStore;
  let sockDir = '';
  let agent: { server: PodHandoffServer; rec: AgentRecord };
  let baseline = '';
  const podIp = '10.244.7.5';

  const config = (extra: Record<string, unknown> = {}) => JSON.stringify({
    cniVersion: '1.0.0', name: 'ambit-test', type: 'ambit-cni',
    agentSocket: join(sockDir, 'ztunnel.sock'), objectStore: store.root, logFile: join(sockDir, 'cni.log'),
    prevResult: prevResult(podIp), ...extra,
  });
  const env = (command: string, pod: string, extra: Record<string, string | undefined> = {}) => ({
    CNI_COMMAND: command, CNI_CONTAINERID: `ctr-${pod}`, CNI_NETNS: netns, CNI_IFNAME: 'eth0',
    CNI_PATH: '/usr/lib/cni',
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=mesh;K8S_POD_NAME=${pod};K8S_POD_UID=uid-${pod};K8S_POD_INFRA_CONTAINER_ID=x`,
    ...extra,
  });

  before(async () => {
    netns = netnsAdd(nsName);
    baseline = ruleState(nsName);
    store = tempStore();
    sockDir = mkdtempSync(join(tmpdir(), 'ambt-cnisock-'));
    await store.store.put(namespaceObj('mesh', { 'istio.io/dataplane-mode': 'ambient' }) as any);
    await store.store.put(namespaceObj('plain') as any);
    await store.store.put(podObj('mesh', 'web', 'uid-web', { sa: 'web-sa' }) as any);
    await store.store.put(podObj('mesh', 'optout', 'uid-optout', { labels: { 'istio.io/dataplane-mode': 'none' } }) as any);
    await store.store.put(podObj('plain', 'other', 'uid-other') as any);
    await store.store.put(podObj('plain', 'solo', 'uid-solo', { labels: { 'istio.io/dataplane-mode': 'ambient' } }) as any);
    agent = await startAgent(join(sockDir, 'ztunnel.sock'));
  });

  after(async () => {
    await agent?.server.close();
    netnsDel(nsName);
    store?.cleanup();
    if (sockDir) rmSync(sockDir, { recursive: true, force: true });
  });

  it('VERSION reports the supported versions', async () => {
    const r = await runCni({ CNI_COMMAND: 'VERSION' }, JSON.stringify({ cniVersion: '1.0.0' }));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.json.cniVersion, '1.0.0');
    assert.deepEqual(r.json.supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0']);
  });

  it('enrolled ADD installs the rules, hands the pod over, passes prevResult through; CHECK; DEL cleans up', async () => {
    const r = await runCni(env('ADD', 'web'), config());
    assert.equal(r.code, 0, `${r.stdout}${r.stderr} ${hint(nsName)}`);
    assert.deepEqual(r.json, prevResult(podIp), 'stdout must be prevResult unchanged');

    const save = inNetns(nsName, 'iptables-save', []);
    for (const line of [
      '-A PREROUTING -j AMBIT_PRERT', '-A OUTPUT -j AMBIT_OUTPUT',
      '-A AMBIT_PRERT -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff',
      '-A AMBIT_OUTPUT -m connmark --mark 0x111/0xfff -j CONNMARK --restore-mark --nfmask 0xfff --ctmask 0xfff',
      '-A AMBIT_PRERT -s 169.254.7.127/32 -p tcp -j ACCEPT',
      '-A AMBIT_PRERT ! -d 127.0.0.1/32 -p tcp -m tcp ! --dport 15008 --tcp-flags FIN,SYN,RST,ACK SYN -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15006',
      '-A AMBIT_OUTPUT -m connmark --mark 0x111/0xfff -j ACCEPT',
      '-A AMBIT_OUTPUT -o lo -j ACCEPT',
      '-A AMBIT_OUTPUT ! -d 127.0.0.1/32 -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001',
    ]) assert.ok(save.includes(line + '\n'), `missing "${line}" in\n${save} ${hint(nsName)}`);
    assert.match(inNetns(nsName, 'ip', ['rule']), /32764:\s+from all fwmark 0x111\/0xfff lookup 100/);
    assert.match(inNetns(nsName, 'ip', ['route', 'show', 'table', '100']), /local default dev lo/);
    assert.doesNotMatch(inNetns(nsName, 'ip6tables-save', []), /AMBIT/, 'no IPv6 rules for an IPv4-only pod');

    assert.equal(agent.rec.adds.length, 1);
    const add = agent.rec.adds[0]!;
    assert.deepEqual(
      { uid: add.uid, name: add.name, namespace: add.namespace, serviceAccount: add.serviceAccount, ips: add.ips, netnsPath: add.netnsPath },
      { uid: 'uid-web', name: 'web', namespace: 'mesh', serviceAccount: 'web-sa', ips: [podIp], netnsPath: netns });
    assert.equal(add.inode, add.netnsInode, 'the fd the agent got must be the pod netns');

    // ADD again (runtime retry): same rules, nothing duplicated.
    const after1 = ruleState(nsName);
    const r2 = await runCni(env('ADD', 'web'), config());
    assert.equal(r2.code, 0, r2.stdout);
    assert.equal(ruleState(nsName), after1);
    assert.equal(agent.rec.adds.length, 2);

    const c = await runCni(env('CHECK', 'web'), config());
    assert.equal(c.code, 0, c.stdout);
    assert.equal(c.stdout, '');

    // CHECK names what is missing.
    inNetns(nsName, 'iptables', ['-t', 'nat', '-D', 'AMBIT_OUTPUT', '-o', 'lo', '-j', 'ACCEPT']);
    const c2 = await runCni(env('CHECK', 'web'), config());
    assert.equal(c2.code, 1);
    assert.equal(c2.json.code, 103);
    assert.match(c2.json.msg, /-A AMBIT_OUTPUT -o lo -j ACCEPT/);

    const d = await runCni(env('DEL', 'web'), config());
    assert.equal(d.code, 0, d.stdout);
    assert.equal(ruleState(nsName), baseline, `DEL must leave nothing behind ${hint(nsName)}`);
    assert.deepEqual(agent.rec.dels, ['uid-web']);

    const d2 = await runCni(env('DEL', 'web'), config());
    assert.equal(d2.code, 0, d2.stdout);
    assert.equal(ruleState(nsName), baseline);

    const log = readFileSync(join(sockDir, 'cni.log'), 'utf8').trim().split('\n');
    assert.ok(log.length >= 6);
    assert.match(log[0]!, /command=ADD container=ctr-web pod=mesh\/web enrolled=true result=ok duration_ms=\d/);
  });

  it('dual-stack pod: IPv6 rules and policy routing too, all removed by DEL', async () => {
    const ip6 = 'fd00:ab::5';
    const cfg6 = config({ prevResult: prevResult(podIp, '1.0.0', ip6) });
    const r = await runCni(env('ADD', 'web'), cfg6);
    assert.equal(r.code, 0, `${r.stdout} ${hint(nsName)}`);
    assert.deepEqual(r.json, prevResult(podIp, '1.0.0', ip6));
    assert.deepEqual(agent.rec.adds.at(-1)!.ips, [podIp, ip6]);
    const save6 = inNetns(nsName, 'ip6tables-save', []);
    assert.ok(save6.includes('-A AMBIT_OUTPUT ! -d ::1/128 -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001\n'), save6);
    assert.ok(save6.includes('-A PREROUTING -j AMBIT_PRERT\n'), save6);
    assert.match(inNetns(nsName, 'ip', ['-6', 'rule']), /32764:\s+from all fwmark 0x111\/0xfff lookup 100/);
    assert.match(inNetns(nsName, 'ip', ['-6', 'route', 'show', 'table', '100']), /local default dev lo/);
    assert.deepEqual(await check(netns, { ipv6: true }), []);
    const c = await runCni(env('CHECK', 'web'), cfg6);
    assert.equal(c.code, 0, c.stdout);
    const d = await runCni(env('DEL', 'web'), config({ prevResult: undefined }));
    assert.equal(d.code, 0, d.stdout);
    assert.equal(ruleState(nsName), baseline, `DEL must leave nothing behind ${hint(nsName)}`);
  });

  it('DEL after the netns is gone succeeds, and tells the agent', async () => {
    const gone = `ambt-g${shortId()}`;
    const path = netnsAdd(gone);
    try {
      const a = await runCni(env('ADD', 'web', { CNI_NETNS: path }), config());
      assert.equal(a.code, 0, a.stdout);
    } finally {
      netnsDel(gone);
    }
    const before = agent.rec.dels.length;
    const d = await runCni(env('DEL', 'web', { CNI_NETNS: path }), config());
    assert.equal(d.code, 0, d.stdout);
    const d2 = await runCni(env('DEL', 'web', { CNI_NETNS: undefined }), config());
    assert.equal(d2.code, 0, d2.stdout);
    assert.equal(agent.rec.dels.length, before + 2);
  });

  it('DEL succeeds when the agent is down', async () => {
    const d = await runCni(env('DEL', 'web'), config({ agentSocket: join(sockDir, 'nobody.sock') }));
    assert.equal(d.code, 0, d.stdout);
  });

  it('pod enrolled by its own label in a plain namespace', async () => {
    const r = await runCni(env('ADD', 'solo', { CNI_ARGS: 'K8S_POD_NAMESPACE=plain;K8S_POD_NAME=solo;K8S_POD_UID=uid-solo' }), config());
    try {
      assert.equal(r.code, 0, r.stdout);
      assert.deepEqual(await check(netns), []);
      assert.equal(agent.rec.adds.at(-1)!.serviceAccount, 'default');
    } finally {
      const d = await runCni(env('DEL', 'solo', { CNI_ARGS: 'K8S_POD_NAMESPACE=plain;K8S_POD_NAME=solo;K8S_POD_UID=uid-solo' }), config());
      assert.equal(d.code, 0);
    }
    assert.equal(ruleState(nsName), baseline);
  });

  for (const [title, pod, args] of [
    ['namespace not enrolled', 'other', 'K8S_POD_NAMESPACE=plain;K8S_POD_NAME=other;K8S_POD_UID=uid-other'],
    ['pod opted out with label none', 'optout', 'K8S_POD_NAMESPACE=mesh;K8S_POD_NAME=optout;K8S_POD_UID=uid-optout'],
    ['pod unknown', 'ghost', 'K8S_POD_NAMESPACE=mesh;K8S_POD_NAME=ghost'],
    ['no Kubernetes args', 'none', undefined],
  ] as const) {
    it(`not enrolled (${title}): prevResult passed through, no rules, handed over only as not enrolled`, async () => {
      const enrolledAdds = () => agent.rec.adds.filter((a) => a.enrolled !== false).length;
      const adds = enrolledAdds();
      const before = agent.rec.adds.length;
      for (const version of ['1.0.0', '0.4.0', '0.3.1']) {
        const r = await runCni(env('ADD', pod, { CNI_ARGS: args }), config({ cniVersion: version, prevResult: prevResult(podIp, version) }));
        assert.equal(r.code, 0, r.stdout);
        assert.deepEqual(r.json, prevResult(podIp, version));
      }
      assert.equal(ruleState(nsName), baseline);
      assert.equal(enrolledAdds(), adds);
      // A pod the metadata source knows is handed over (enrolled: false) for runtime enrollment.
      const known = pod === 'other' || pod === 'optout';
      assert.equal(agent.rec.adds.length - before, known ? 3 : 0);
      const c = await runCni(env('CHECK', pod, { CNI_ARGS: args }), config());
      assert.equal(c.code, 0, c.stdout);
    });
  }

  it('not enrolled with the agent unreachable: ADD succeeds, the log says the agent was not told', async () => {
    const args = 'K8S_POD_NAMESPACE=plain;K8S_POD_NAME=other;K8S_POD_UID=uid-other';
    const r = await runCni(env('ADD', 'other', { CNI_ARGS: args }), config({ agentSocket: join(sockDir, 'nobody.sock') }));
    assert.equal(r.code, 0, r.stdout);
    assert.deepEqual(r.json, prevResult(podIp));
    assert.equal(ruleState(nsName), baseline);
    const last = readFileSync(join(sockDir, 'cni.log'), 'utf8').trim().split('\n').at(-1)!;
    assert.match(last, /enrolled=false result=ok note=".*agent not told/);
  });

  it('malformed input: code 4 naming the field, code 7 naming the env var, no rules', async () => {
    const cases: [string, Record<string, string | undefined>, string, number, RegExp][] = [
      ['not JSON', env('ADD', 'web'), '{nope', 4, /not valid JSON/],
      ['missing agentSocket', env('ADD', 'web'), JSON.stringify({ cniVersion: '1.0.0', name: 'x', type: 'ambit-cni', prevResult: prevResult(podIp) }), 4, /"agentSocket"/],
      ['missing prevResult', env('ADD', 'web'), config({ prevResult: undefined }), 4, /"prevResult"/],
      ['bad cniVersion', env('ADD', 'web'), config({ cniVersion: '9.9.9' }), 1, /"cniVersion"/],
      ['missing CNI_NETNS', env('ADD', 'web', { CNI_NETNS: undefined }), config(), 7, /CNI_NETNS/],
      ['nonexistent CNI_NETNS', env('ADD', 'web', { CNI_NETNS: '/var/run/netns/ambt-nonexistent' }), config(), 7, /CNI_NETNS=\/var\/run\/netns\/ambt-nonexistent does not exist/],
      ['CNI_NETNS not a netns', env('ADD', 'web', { CNI_NETNS: tmpdir() }), config(), 7, /cannot be entered as a network namespace/],
      ['missing CNI_CONTAINERID', env('ADD', 'web', { CNI_CONTAINERID: undefined }), config(), 7, /CNI_CONTAINERID/],
      ['bad CNI_COMMAND', env('FROB', 'web'), config(), 7, /CNI_COMMAND/],
    ];
    for (const [title, e, stdin, code, msg] of cases) {
      const r = await runCni(e, stdin);
      assert.equal(r.code, 1, `${title}: ${r.stdout}`);
      assert.equal(r.json?.code, code, `${title}: ${r.stdout}`);
      assert.match(r.json.msg, msg, title);
      assert.ok(typeof r.json.cniVersion === 'string');
    }
    assert.equal(ruleState(nsName), baseline);
  });

  it('agent socket absent: code 11 naming the socket, no rules left', async () => {
    const sock = join(sockDir, 'absent.sock');
    const r = await runCni(env('ADD', 'web'), config({ agentSocket: sock }));
    assert.equal(r.code, 1);
    assert.equal(r.json.code, 11);
    assert.ok(r.json.msg.includes(sock), r.json.msg);
    assert.match(r.json.msg, /node agent/);
    assert.equal(ruleState(nsName), baseline);
  });

  it('agent socket stale (nobody listening): code 11, rules rolled back', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ambt-cnistale-'));
    try {
      const sock = join(dir, 'stale.sock');
      // A socket file nobody listens on, as a crashed agent leaves behind.
      execFileSync('python3', ['-c', `import socket;s=socket.socket(socket.AF_UNIX,socket.SOCK_SEQPACKET);s.bind(${JSON.stringify(sock)})`]);
      const r = await runCni(env('ADD', 'web'), config({ agentSocket: sock }));
      assert.equal(r.code, 1, r.stdout);
      assert.equal(r.json.code, 11, r.stdout);
      assert.equal(ruleState(nsName), baseline, `rules must be rolled back ${hint(nsName)}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('agent refusing: error with the agent\'s reason, rules rolled back, fd closed by the server', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ambt-cniref-'));
    const refusing = await startAgent(join(dir, 'refuse.sock'), true);
    try {
      const r = await runCni(env('ADD', 'web'), config({ agentSocket: join(dir, 'refuse.sock') }));
      assert.equal(r.code, 1, r.stdout);
      assert.equal(r.json.code, 101, r.stdout);
      assert.match(r.json.msg, /TEST_REFUSED/);
      assert.equal(refusing.rec.adds.length, 1);
      const fd = refusing.rec.adds[0]!.netnsFd;
      assert.throws(() => fstatSync(fd), /EBADF/, 'the server must close the fd of a refused pod');
      assert.equal(ruleState(nsName), baseline, `rules must be rolled back ${hint(nsName)}`);
      assert.equal(await present(netns), false);
    } finally {
      await refusing.server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('agent hanging: code 11 after the 5 s timeout, rules rolled back', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ambt-cnihang-'));
    let release: () => void = () => {};
    const hung = new PodHandoffServer({
      socketPath: join(dir, 'hang.sock'),
      onAdd: (p) => new Promise<void>((resolve) => { release = () => { closeFd(p.netnsFd); resolve(); }; }),
      onDel: async () => {},
    });
    await hung.start();
    try {
      const r = await runCni(env('ADD', 'web'), config({ agentSocket: join(dir, 'hang.sock') }));
      assert.equal(r.code, 1, r.stdout);
      assert.equal(r.json.code, 11, r.stdout);
      assert.match(r.json.msg, /5000 ms/);
      assert.ok(r.ms >= 5000, `took ${r.ms} ms`);
      assert.equal(ruleState(nsName), baseline, `rules must be rolled back ${hint(nsName)}`);
    } finally {
      release();
      await hung.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('ADD wall time (p50 of 20 runs, ADD+DEL cycles)', async () => {
    const times: number[] = [];
    const passTimes: number[] = [];
    for (let i = 0; i < 20; i++) {
      const a = await runCni(env('ADD', 'web'), config({ logFile: undefined }));
      assert.equal(a.code, 0, a.stdout);
      times.push(a.ms);
      const d = await runCni(env('DEL', 'web'), config({ logFile: undefined }));
      assert.equal(d.code, 0, d.stdout);
      const p = await runCni(env('ADD', 'other', { CNI_ARGS: 'K8S_POD_NAMESPACE=plain;K8S_POD_NAME=other' }), config({ logFile: undefined }));
      passTimes.push(p.ms);
    }
    // The same with NODE_COMPILE_CACHE set for the whole process (what the bin wrapper could do):
    // it also spares type-stripping main.ts, i.e. loading the TypeScript stripper at all.
    const cacheDir = mkdtempSync(join(tmpdir(), 'ambt-cnincc-'));
    const cachedTimes: number[] = [];
    try {
      for (let i = 0; i < 11; i++) {
        const a = await runCni(env('ADD', 'web', { NODE_COMPILE_CACHE: cacheDir }), config({ logFile: undefined }));
        assert.equal(a.code, 0, a.stdout);
        if (i > 0) cachedTimes.push(a.ms);
        assert.equal((await runCni(env('DEL', 'web'), config({ logFile: undefined }))).code, 0);
      }
    } finally {
      rmSync(cacheDir, { recursive: true, force: true });
    }
    const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const v = await runCni({ CNI_COMMAND: 'VERSION' }, '');
    console.log(`# ambit-cni ADD enrolled p50=${p50(times).toFixed(1)}ms max=${Math.max(...times).toFixed(1)}ms; ` +
      `pass-through p50=${p50(passTimes).toFixed(1)}ms; VERSION (node start-up floor) ${v.ms.toFixed(1)}ms; ` +
      `ADD with NODE_COMPILE_CACHE p50=${p50(cachedTimes).toFixed(1)}ms`);
    assert.equal(ruleState(nsName), baseline);
  });
});
