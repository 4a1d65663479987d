/**
 * ambit-cni chained after the real CNI reference plugins (loopback, bridge + host-local), run as a
 * runtime runs a conflist: each plugin gets the previous one's result as prevResult; DEL in reverse.
 * Everything happens inside a throwaway "node" netns, so the host is not touched.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { CNI_BIN, ruleState, hint, inNetns } from './cni-helpers.ts';
import { chainFixture } from './cni-chain-fixture.ts';

const PLUGINS = '/usr/lib/cni';

/** Runs one plugin inside the node netns, as a runtime would. */
function plugin(nodeNs: string, bin: string, env: Record<string, string>, conf: object): Promise<{ code: number; json: any; stdout: string }> {
  return new Promise((resolve) => {
    const child = execFile('ip', ['netns', 'exec', nodeNs, bin], { env: { PATH: process.env.PATH!, ...env }, encoding: 'utf8' }, (err, stdout) => {
      let json: any;
      try { json = stdout.trim() ? JSON.parse(stdout) : undefined; } catch { /* left undefined */ }
      resolve({ code: err ? ((err as any).code ?? -1) : 0, json, stdout });
    });
    child.stdin!.end(JSON.stringify(conf));
  });
}

describe('ambit-cni in a conflist after bridge + host-local', () => {
  const fx = chainFixture('c');
  const { id, nodeNs, podNs, adds, dels } = fx;

  it('passes the bridge result through, hands over the allocated IP, and DEL in reverse cleans up', async (t) => {
    t.diagnostic(`node netns ${nodeNs}, pod netns ${podNs} ${hint(podNs)}`);
    const baseline = ruleState(podNs);
    const conflist = {
      cniVersion: '1.0.0', name: `ambt-${id}`,
      plugins: [
        { type: 'bridge', bridge: 'ambit0', isGateway: true, ipMasq: false,
          ipam: { type: 'host-local', ranges: [[{ subnet: '10.77.0.0/24' }]], dataDir: join(fx.dir, 'ipam') } },
        { type: 'ambit-cni', agentSocket: join(fx.dir, 'ztunnel.sock'), objectStore: fx.store.root, logFile: join(fx.dir, 'cni.log') },
      ],
    };
    const env = (cmd: string) => ({
      CNI_COMMAND: cmd, CNI_CONTAINERID: `ctr-${id}`, CNI_NETNS: fx.podPath, CNI_IFNAME: 'eth0', CNI_PATH: PLUGINS,
      CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=mesh;K8S_POD_NAME=web;K8S_POD_UID=uid-${id}`,
    });
    const conf = (i: number, prev?: unknown) => ({ cniVersion: conflist.cniVersion, name: conflist.name, ...conflist.plugins[i], ...(prev ? { prevResult: prev } : {}) });

    const lo = await plugin(nodeNs, `${PLUGINS}/loopback`, { ...env('ADD'), CNI_IFNAME: 'lo' }, { cniVersion: '1.0.0', name: 'lo', type: 'loopback' });
    assert.equal(lo.code, 0, lo.stdout);
    const br = await plugin(nodeNs, `${PLUGINS}/bridge`, env('ADD'), conf(0));
    assert.equal(br.code, 0, br.stdout);
    const am = await plugin(nodeNs, CNI_BIN, env('ADD'), conf(1, br.json));
    assert.equal(am.code, 0, am.stdout);
    assert.deepEqual(am.json, br.json, 'ambit-cni must return the bridge result unchanged');
    const podIp = (br.json.ips[0].address as string).split('/')[0];
    assert.equal(adds.length, 1);
    assert.deepEqual(adds[0]!.ips, [podIp]);
    assert.equal(adds[0]!.serviceAccount, 'web');
    assert.match(inNetns(podNs, 'iptables-save', []), /-A AMBIT_OUTPUT ! -d 127.0.0.1\/32 -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m mark ! --mark 0x539\/0xfff -j REDIRECT --to-ports 15001/);

    const ck = await plugin(nodeNs, CNI_BIN, env('CHECK'), conf(1, am.json));
    assert.equal(ck.code, 0, ck.stdout);

    for (const [i, bin] of [[1, CNI_BIN], [0, `${PLUGINS}/bridge`]] as const) {
      const d = await plugin(nodeNs, bin, env('DEL'), conf(i, am.json));
      assert.equal(d.code, 0, `${bin}: ${d.stdout}`);
    }
    assert.deepEqual(dels, [`uid-${id}`]);
    assert.equal(ruleState(podNs), baseline, `nothing of Ambit may remain ${hint(podNs)}`);
  });
});
