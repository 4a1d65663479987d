/**
 * The local runtime's CNI executor with the real reference plugins (bridge, host-local, loopback) in a
 * real "node" netns, plus a small chained test plugin (a shell script) that records what it was given
 * and can fail. Debug: ip netns exec <node netns> ip link
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { cniAdd, cniDel, nodeConflist, type CniConflist } from '../../src/local/cni-exec.ts';
import { Ledger } from '../../src/local/ledger.ts';
import { createSandbox, destroySandbox, listRecords, podIPOf } from '../../src/local/sandbox.ts';
import { isAmbitError } from '../../src/shared/errors.ts';

const id = randomBytes(3).toString('hex');
const NODE = `ambt-cx${id}`;
const POD = `ambt-cp${id}`;
const sh = (cmd: string, args: string[]) => spawnSync(cmd, args, { encoding: 'utf8' });
const run = (cmd: string, args: string[]) => { const r = sh(cmd, args); assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`); return r.stdout; };

describe('local CNI executor', () => {
  let dir = '';
  let bin = '';
  let base: CniConflist;
  before(() => {
    for (const n of [NODE, POD]) sh('ip', ['netns', 'del', n]);
    dir = mkdtempSync(join(tmpdir(), 'ambt-cni-'));
    bin = join(dir, 'bin');
    run('mkdir', ['-p', bin]);
    // A chained plugin: records stdin/env; fails ADD when the config says so; passes prevResult through.
    writeFileSync(join(bin, 'ambt-test'), `#!/bin/sh
in=$(cat)
printf '%s' "$in" > "${dir}/stdin-$CNI_COMMAND.json"
env | grep '^CNI_' > "${dir}/env-$CNI_COMMAND"
case "$in" in *'"fail":true'*) if [ "$CNI_COMMAND" = ADD ]; then echo '{"cniVersion":"1.0.0","code":7,"msg":"agent refused the pod","details":"test"}'; exit 1; fi;; esac
if [ "$CNI_COMMAND" = ADD ]; then printf '%s' "$in" | ${process.execPath} -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(JSON.stringify(JSON.parse(s).prevResult)))'; fi
exit 0
`);
    chmodSync(join(bin, 'ambt-test'), 0o755);
    run('ip', ['netns', 'add', NODE]);
    run('ip', ['-n', NODE, 'link', 'set', 'lo', 'up']);
    base = nodeConflist({ podCidr: '10.123.45.0/24', podGateway: '10.123.45.1', ipamDataDir: join(dir, 'ipam') });
  });
  after(() => {
    for (const n of [NODE, POD]) sh('ip', ['netns', 'del', n]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('ADD chains prevResult and passes the runtime environment; DEL undoes it', async () => {
    run('ip', ['netns', 'add', POD]);
    const list: CniConflist = { ...base, plugins: [...base.plugins, { type: 'ambt-test' }] };
    const inv = { containerId: 'c0ffee', netnsPath: `/run/netns/${POD}`, ifName: 'eth0', binDirs: ['/usr/lib/cni', bin], execNetns: NODE,
      args: { K8S_POD_NAMESPACE: 'ns1', K8S_POD_NAME: 'p1', K8S_POD_UID: 'u-1' } };
    const result = await cniAdd(list, inv);
    assert.match(result.ips?.[0]?.address ?? '', /^10\.123\.45\.\d+\/24$/);
    const stdin = JSON.parse(readFileSync(join(dir, 'stdin-ADD.json'), 'utf8')) as { name: string; cniVersion: string; prevResult: { ips: unknown[] } };
    assert.equal(stdin.cniVersion, '1.0.0');
    assert.equal(stdin.name, 'ambit-pods');
    assert.deepEqual(stdin.prevResult.ips, result.ips);
    const env = readFileSync(join(dir, 'env-ADD'), 'utf8');
    assert.match(env, /CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=p1;K8S_POD_UID=u-1/);
    assert.match(env, new RegExp(`CNI_NETNS=/run/netns/${POD}`));
    assert.match(env, /CNI_IFNAME=eth0/);
    assert.match(env, /CNI_CONTAINERID=c0ffee/);
    assert.match(run('ip', ['-n', POD, '-4', 'addr', 'show', 'eth0']), /10\.123\.45\./);
    assert.match(run('ip', ['-n', NODE, 'link', 'show', 'cni0']), /cni0/, 'bridge lives in the node netns');
    await cniDel(list, inv, result);
    assert.ok(existsSync(join(dir, 'stdin-DEL.json')));
    assert.equal(run('ip', ['-n', NODE, '-o', 'link', 'show', 'master', 'cni0']).trim(), '', 'veth gone');
    run('ip', ['netns', 'del', POD]);
  });

  it('a failed ADD is undone: DEL of what was added, netns removed, the plugin message reported', async () => {
    const ledger = new Ledger(join(dir, 'ledger.json'));
    const list: CniConflist = { ...base, plugins: [...base.plugins, { type: 'ambt-test', fail: true }] };
    const records = join(dir, 'pods');
    await assert.rejects(createSandbox({ uid: 'u-2', namespace: 'ns1', name: 'p2', node: 'node-1', nodeNetns: NODE, netns: POD,
      conflist: list, binDirs: ['/usr/lib/cni', bin], recordsDir: records, ledger }), (err: unknown) => {
      assert.ok(isAmbitError(err, 'LOCAL_CNI_FAILED'), String(err));
      assert.match((err as Error).message, /ambt-test: agent refused the pod \(test\)/);
      return true;
    });
    assert.ok(!run('ip', ['netns', 'list']).includes(POD), 'pod netns removed');
    assert.equal(run('ip', ['-n', NODE, '-o', 'link', 'show', 'master', 'cni0']).trim(), '', 'no veth left on the bridge');
    const ipam = join(dir, 'ipam', 'ambit-pods');
    const reserved = existsSync(ipam) ? readdirSync(ipam).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)) : [];
    assert.deepEqual(reserved, [], 'IP released');
    assert.deepEqual(listRecords(records), []);
    assert.deepEqual(ledger.data.netns, []);
  });

  it('createSandbox + destroySandbox: loopback and eth0 up, then everything removed', async () => {
    const ledger = new Ledger(join(dir, 'ledger2.json'));
    const records = join(dir, 'pods2');
    const rec = await createSandbox({ uid: 'u-3', namespace: 'ns1', name: 'p3', node: 'node-1', nodeNetns: NODE, netns: POD,
      conflist: base, binDirs: ['/usr/lib/cni'], recordsDir: records, ledger });
    assert.match(podIPOf(rec) ?? '', /^10\.123\.45\.\d+$/);
    assert.match(run('ip', ['-n', POD, 'link', 'show', 'lo']), /UP/);
    assert.equal(listRecords(records).length, 1);
    await destroySandbox(rec, records, ledger);
    assert.ok(!run('ip', ['netns', 'list']).includes(POD));
    assert.deepEqual(listRecords(records), []);
  });
});
