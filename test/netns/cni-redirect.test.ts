/**
 * The in-pod rules installed by ambit-cni really redirect: outbound TCP lands on 15001 with the
 * original destination readable, inbound on 15006, HBONE 15008 / loopback / the agent's own
 * (marked) sockets / kubelet probes pass untouched, and a connection the agent makes with a
 * spoofed source (transparent) gets its replies back through the connmark + policy routing.
 *
 * Topology: pod netns P (10.255.255.2, eth0) <-veth-> peer netns Q (10.255.255.1, eth0).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listen, connect, originalDst, closeFd } from '../../src/native/index.ts';
import { PodHandoffServer } from '../../src/ztunnel/pod-handoff-server.ts';
import { runCni, shortId, netnsAdd, netnsDel, sh, hint, tempStore, namespaceObj, podObj, prevResult } from './cni-helpers.ts';
import type { TempStore } from './cni-helpers.ts';

const POD_IP = '10.255.255.2';
const PEER_IP = '10.255.255.1';
const PROBE_IP = '169.254.7.127';

/** A server that tells the client who it is, and records original destinations and peers. */
function labelled(label: string) {
  const seen: { remote: string; dst?: { address: string; port: number } }[] = [];
  const server = net.createServer((s) => {
    let dst: { address: string; port: number } | undefined;
    try { dst = originalDst(s); } catch { /* no NAT entry: not redirected */ }
    seen.push({ remote: s.remoteAddress ?? '', dst });
    s.end(`${label} from=${s.remoteAddress}`);
  });
  return { server, seen };
}

function readAll(s: net.Socket, ms = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => { s.destroy(); reject(new Error(`no answer within ${ms}ms (got "${buf}")`)); }, ms);
    s.setEncoding('utf8');
    s.on('data', (d) => { buf += d; });
    s.on('end', () => { clearTimeout(t); resolve(buf); s.destroy(); });
    s.on('error', (e) => { clearTimeout(t); reject(e); });
  });
}

describe('ambit-cni in-pod redirection (real traffic)', () => {
  const id = shortId();
  const podNs = `ambt-r${id}`;
  const peerNs = `ambt-q${id}`;
  let podPath = '';
  let peerPath = '';
  let store: TempStore;
  let dir = '';
  let agent: PodHandoffServer;
  const servers: net.Server[] = [];
  let cfg = '';
  const cniEnv = (cmd: string) => ({
    CNI_COMMAND: cmd, CNI_CONTAINERID: `ctr-${id}`, CNI_NETNS: podPath, CNI_IFNAME: 'eth0',
    CNI_ARGS: `K8S_POD_NAMESPACE=mesh;K8S_POD_NAME=app;K8S_POD_UID=uid-app-${id}`,
  });

  async function serve(netns: string, host: string, port: number, label: string, mark?: number) {
    const l = labelled(label);
    await listen(l.server, { netns, host, port, mark });
    servers.push(l.server);
    return l;
  }

  before(async () => {
    podPath = netnsAdd(podNs);
    peerPath = netnsAdd(peerNs);
    sh('ip', ['-n', podNs, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', peerNs]);
    for (const [ns, ip] of [[podNs, POD_IP], [peerNs, PEER_IP]] as const) {
      sh('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
      sh('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
      sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    // Strict reverse-path filtering in the pod must not break anything (no sysctl is needed).
    for (const k of ['all', 'default', 'eth0', 'lo']) sh('ip', ['netns', 'exec', podNs, 'sysctl', '-q', '-w', `net.ipv4.conf.${k}.rp_filter=1`]);
    // The node side of kubelet probes: SNATed to 169.254.7.127.
    sh('ip', ['-n', peerNs, 'addr', 'add', `${PROBE_IP}/32`, 'dev', 'eth0']);
    sh('ip', ['-n', podNs, 'route', 'add', `${PROBE_IP}/32`, 'dev', 'eth0']);

    store = tempStore();
    dir = mkdtempSync(join(tmpdir(), 'ambt-cniredir-'));
    await store.store.put(namespaceObj('mesh', { 'istio.io/dataplane-mode': 'ambient' }) as any);
    await store.store.put(podObj('mesh', 'app', `uid-app-${id}`) as any);
    agent = new PodHandoffServer({ socketPath: join(dir, 'z.sock'), onAdd: async (p) => closeFd(p.netnsFd), onDel: async () => {} });
    await agent.start();
    cfg = JSON.stringify({ cniVersion: '1.0.0', name: 't', type: 'ambit-cni', agentSocket: join(dir, 'z.sock'), objectStore: store.root, prevResult: prevResult(POD_IP) });
    const r = await runCni(cniEnv('ADD'), cfg);
    assert.equal(r.code, 0, r.stdout);
  });

  after(async () => {
    for (const s of servers) s.close();
    if (podPath) await runCni(cniEnv('DEL'), cfg).catch(() => {});
    await agent?.close();
    netnsDel(podNs);
    netnsDel(peerNs);
    store?.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('redirects outbound, inbound; leaves HBONE, loopback, marked sockets and probes alone; transparent replies come back', async (t) => {
    t.diagnostic(`pod netns ${podNs}, peer ${peerNs} ${hint(podNs)}`);
    // What the agent would listen on in the pod (marked sockets, like the agent's own).
    const outbound = await serve(podPath, '0.0.0.0', 15001, 'outbound', 0x539);
    const inbound = await serve(podPath, '0.0.0.0', 15006, 'inbound', 0x539);
    await serve(podPath, '0.0.0.0', 15008, 'hbone', 0x539);
    // The app in the pod, and a real server on the peer.
    await serve(podPath, '0.0.0.0', 8080, 'app');
    await serve(podPath, '127.0.0.1', 9090, 'app-lo');
    const peer = await serve(peerPath, PEER_IP, 80, 'peer');

    // 1. Outbound from the app: lands on 15001 with the original destination.
    assert.match(await readAll(await connect({ netns: podPath, host: PEER_IP, port: 80, timeoutMs: 3000 })), /^outbound/);
    assert.deepEqual(outbound.seen.at(-1)!.dst && { address: outbound.seen.at(-1)!.dst!.address, port: outbound.seen.at(-1)!.dst!.port },
      { address: PEER_IP, port: 80 });
    assert.equal(peer.seen.length, 0, 'the peer must not see the redirected connection');

    // 2. A socket with the agent's mark goes straight out.
    assert.match(await readAll(await connect({ netns: podPath, host: PEER_IP, port: 80, mark: 0x539, timeoutMs: 3000 })), /^peer from=10.255.255.2/);
    assert.equal(outbound.seen.length, 1);

    // 3. Loopback is not redirected (127.0.0.1, and the pod's own IP which goes via lo).
    assert.match(await readAll(await connect({ netns: podPath, host: '127.0.0.1', port: 9090, timeoutMs: 3000 })), /^app-lo/);
    assert.match(await readAll(await connect({ netns: podPath, host: POD_IP, port: 8080, timeoutMs: 3000 })), /^app /);
    assert.equal(outbound.seen.length, 1);

    // 4. Inbound from outside: plaintext -> 15006 with the original destination, 15008 untouched.
    assert.match(await readAll(await connect({ netns: peerPath, host: POD_IP, port: 8080, timeoutMs: 3000 })), /^inbound from=10.255.255.1/);
    assert.deepEqual({ ...inbound.seen.at(-1)!.dst }, { address: POD_IP, port: 8080, family: 4 });
    assert.match(await readAll(await connect({ netns: peerPath, host: POD_IP, port: 15008, timeoutMs: 3000 })), /^hbone/);

    // 5. kubelet probes (SNATed to 169.254.7.127) reach the app directly.
    assert.match(await readAll(await connect({ netns: peerPath, host: POD_IP, port: 8080, localAddress: PROBE_IP, timeoutMs: 3000 })),
      /^app from=169.254.7.127/);
    assert.equal(inbound.seen.length, 1);

    // 6. The agent delivering to the app with the client's IP (transparent, spoofed source):
    //    the app's replies must come back to the agent (connmark -> mark -> table 100), not go out eth0.
    const spoofed = await connect({ netns: podPath, host: POD_IP, port: 8080, mark: 0x539, transparent: true, localAddress: PEER_IP, timeoutMs: 3000 });
    assert.match(await readAll(spoofed), /^app from=10.255.255.1/);
  });
});
