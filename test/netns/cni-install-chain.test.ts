/**
 * The installer's output runs: install ambit-cni into a temp CNI bin dir and chain it into a
 * containerd-style conflist (bridge + host-local + portmap), then run that file, as read back from
 * disk, through a runtime-style executor (ADD, CHECK-free, DEL) with the real reference plugins. The
 * pod gets its in-pod rules and is handed to the agent; DEL removes them; uninstall gives the file back.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CniInstaller } from '../../src/cni/installer/installer.ts';
import { cniAdd, cniDel, invokePlugin, loopbackConflist } from '../../src/local/cni-exec.ts';
import type { CniConflist, CniInvocation } from '../../src/local/cni-exec.ts';
import { setLogLevel } from '../../src/shared/log.ts';
import { ruleState, hint, inNetns } from './cni-helpers.ts';
import { chainFixture } from './cni-chain-fixture.ts';

setLogLevel('off', 'cni-install');
const PLUGINS = '/usr/lib/cni';

describe('ambit cni-install output, run by a runtime with the real CNI plugins', () => {
  const fx = chainFixture('i');
  const { id, nodeNs, podNs, adds, dels } = fx;

  it('ADD through the chained conflist installs the in-pod rules; DEL removes them; uninstall restores the file', async (t) => {
    t.diagnostic(`node netns ${nodeNs}, pod netns ${podNs} ${hint(podNs)}`);
    const confDir = join(fx.dir, 'net.d');
    const binDir = join(fx.dir, 'bin');
    mkdirSync(confDir);
    mkdirSync(binDir);
    const original = JSON.stringify({
      cniVersion: '1.0.0', name: 'containerd-net',
      plugins: [
        { type: 'bridge', bridge: 'cni0', isGateway: true, ipMasq: false, promiscMode: true,
          ipam: { type: 'host-local', ranges: [[{ subnet: '10.78.0.0/24' }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: join(fx.dir, 'ipam') } },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    }, null, 2) + '\n';
    writeFileSync(join(confDir, '10-containerd-net.conflist'), original);

    const installer = new CniInstaller({
      confDir, binDir, plugin: { kind: 'shim', ambitRoot: join(import.meta.dirname, '../..') },
      settings: { agentSocket: join(fx.dir, 'ztunnel.sock'), objectStore: fx.store.root, logFile: join(fx.dir, 'cni.log') },
    });
    assert.equal(installer.installOnce().action, 'added');

    // What the runtime reads: the file on disk, plugins looked up in the bin fx.dir first.
    const list = JSON.parse(readFileSync(join(confDir, '10-containerd-net.conflist'), 'utf8')) as CniConflist;
    assert.deepEqual(list.plugins.map((p) => p.type), ['bridge', 'portmap', 'ambit-cni']);
    const inv: CniInvocation = {
      containerId: `ctr-${id}`, netnsPath: fx.podPath, ifName: 'eth0', binDirs: [binDir, PLUGINS], execNetns: nodeNs,
      args: { K8S_POD_NAMESPACE: 'mesh', K8S_POD_NAME: 'web', K8S_POD_UID: `uid-${id}` },
    };
    const baseline = ruleState(podNs);
    const lo = loopbackConflist();
    await invokePlugin('ADD', lo, lo.plugins[0]!, { ...inv, ifName: 'lo' }, undefined);
    const result = await cniAdd(list, inv);
    const podIp = result.ips![0]!.address.split('/')[0]!;
    assert.match(podIp, /^10\.78\.0\./);
    assert.equal(adds.length, 1, 'the pod was handed to the agent');
    assert.deepEqual(adds[0]!.ips, [podIp]);
    assert.equal(adds[0]!.serviceAccount, 'web');
    assert.match(inNetns(podNs, 'iptables-save', []), /-A AMBIT_OUTPUT ! -d 127.0.0.1\/32 -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m mark ! --mark 0x539\/0xfff -j REDIRECT --to-ports 15001/,
      `in-pod rules missing ${hint(podNs)}`);

    await cniDel(list, inv, result);
    assert.deepEqual(dels, [`uid-${id}`]);
    assert.equal(ruleState(podNs), baseline, `nothing of Ambit may remain ${hint(podNs)}`);

    const un = installer.uninstall();
    assert.deepEqual(un.errors, []);
    assert.equal(readFileSync(join(confDir, '10-containerd-net.conflist'), 'utf8'), original);
    assert.deepEqual(readdirSync(binDir), []);
  });
});
