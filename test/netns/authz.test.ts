/**
 * L4 authorization and PeerAuthentication enforced on the real data path: pods in their own netns
 * on one bridge, each with the production in-pod rules and a PodProxy, certificates from a real CA,
 * policies fed into the StateStore as the config client would. A client outside the mesh (no
 * proxy) reaches the server in plaintext through 15006.
 *
 *   hub netns: br0 <- c1 10.81.0.2 (ns bar, sa client) | c2 10.81.0.4 (ns baz, sa other)
 *                  <- srv 10.81.0.3 (ns foo, app=srv)   | x 10.81.0.9 (outside the mesh)
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as net from 'node:net';
import * as native from '../../src/native/index.ts';
import { install as installRules } from '../../src/cni/in-pod-rules.ts';
import { CertificateAuthority } from '../../src/controller/ca/ca.ts';
import { CertificateManager } from '../../src/ztunnel/identity/certificate-manager.ts';
import { StateStore } from '../../src/ztunnel/state/store.ts';
import { PodProxy } from '../../src/ztunnel/proxy/pod-proxy.ts';
import { netnsPodSockets } from '../../src/ztunnel/proxy/pod-sockets.ts';
import { HbonePool } from '../../src/ztunnel/proxy/pool.ts';
import { ConnectionTracker, type ClosedConnection } from '../../src/ztunnel/proxy/connections.ts';
import type { LocalPod } from '../../src/ztunnel/proxy/types.ts';
import type { Workload } from '../../src/api/mesh.ts';
import { emptyMatch, type AuthorizationRecord, type AuthzMatch, type PeerAuthenticationRecord } from '../../src/api/policy.ts';
import { stateAuthorizer } from '../../src/ztunnel/authz/authorizer.ts';
import { PolicyRechecker } from '../../src/ztunnel/authz/recheck.ts';
import { setLogLevel } from '../../src/shared/log.ts';
import { netnsAdd, netnsDel, removeLeftoverDirs, removeLeftovers, sh, startApp, talk, until } from './hbone-helpers.ts';

setLogLevel((process.env.AMBIT_LOG_LEVEL as 'debug' | undefined) ?? 'warn');

const TAG = `ambt-az${process.pid}`;
const HUB = `${TAG}-h`;
const TD = 'cluster.local';
interface PodDef { key: string; ns: string; sa: string; ip: string; labels: Record<string, string>; mesh: boolean }
const PODS: PodDef[] = [
  { key: 'c1', ns: 'bar', sa: 'client', ip: '10.81.0.2', labels: { app: 'c1' }, mesh: true },
  { key: 'srv', ns: 'foo', sa: 'srv', ip: '10.81.0.3', labels: { app: 'srv' }, mesh: true },
  { key: 'c2', ns: 'baz', sa: 'other', ip: '10.81.0.4', labels: { app: 'c2' }, mesh: true },
  { key: 'x', ns: 'ext', sa: 'none', ip: '10.81.0.9', labels: {}, mesh: false },
];
const SRV = '10.81.0.3';
const netnsOf = (key: string): string => `/var/run/netns/${TAG}-${key}`;

function wl(p: PodDef): Workload {
  return {
    uid: p.key, name: p.key, namespace: p.ns, addresses: [p.ip], node: 'n1', serviceAccount: p.sa, trustDomain: TD, protocol: 'HBONE',
    ready: true, labels: p.labels, canonicalName: p.key, canonicalRevision: 'v1', services: {},
  };
}
const m = (f: Partial<AuthzMatch>): AuthzMatch => ({ ...emptyMatch(), ...f });
const authz = (name: string, action: 'ALLOW' | 'DENY', rules: AuthzMatch[][][], o: Partial<AuthorizationRecord> = {}): AuthorizationRecord =>
  ({ namespace: 'foo', name, scope: 'NAMESPACE', action, rules: rules.map((clauses) => ({ clauses })), warnings: [], ...o });
const peerAuthn = (name: string, mode: PeerAuthenticationRecord['mode'], o: Partial<PeerAuthenticationRecord> = {}): PeerAuthenticationRecord =>
  ({ namespace: 'foo', name, scope: 'NAMESPACE', mode, portLevel: {}, ...o });

/** A long-lived echo app: what it reads it writes back. */
async function startEcho(netns: string, port: number): Promise<net.Server> {
  const server = net.createServer((s) => { s.on('error', () => {}); s.pipe(s); });
  await native.listen(server, { netns, host: '0.0.0.0', port });
  return server;
}

describe('L4 authorization on the data path', { timeout: 180_000 }, () => {
  let dir: string;
  let ca: CertificateAuthority;
  const state = new StateStore();
  const fds: number[] = [];
  const servers: net.Server[] = [];
  const proxies: PodProxy[] = [];
  const pools: HbonePool[] = [];
  const certs: CertificateManager[] = [];
  const trackers = new Map<string, ConnectionTracker>();
  const srvClosed: ClosedConnection[] = [];
  let rechecker: PolicyRechecker;

  /** Replace the whole policy set (as a fresh push would). */
  function setPolicies(a: AuthorizationRecord[], p: PeerAuthenticationRecord[] = []): void {
    const r = state.apply({
      authorizations: { remove: state.authorizations().map((x) => `${x.namespace}/${x.name}`), upsert: a },
      peerAuthentications: { remove: state.peerAuthentications().map((x) => `${x.namespace}/${x.name}`), upsert: p },
    });
    assert.deepEqual(r.rejected, []);
  }

  /** Talk from a pod to the server; returns the answer or the error, and the server's record of it. */
  async function call(from: string, port: number, payload = 'hello'): Promise<{ ok: boolean; data: string; error?: string; rec?: ClosedConnection }> {
    const n = srvClosed.length;
    const r = await talk(netnsOf(from), SRV, port, payload, 5000);
    const fromIp = PODS.find((p) => p.key === from)!.ip;
    await until(() => srvClosed.slice(n).some((c) => c.src.startsWith(`${fromIp}:`)), 3000, `server record for ${from}`).catch(() => {});
    const rec = srvClosed.slice(n).find((c) => c.src.startsWith(`${fromIp}:`));
    return { ok: r.error === undefined && r.data.startsWith(`${fromIp}|`), data: r.data, error: r.error, rec };
  }

  before(async () => {
    removeLeftovers(/^ambt-az(\d+)-\w+$/);
    removeLeftoverDirs(/^ambt-authz-(\d+)-/);
    netnsAdd(HUB);
    sh('ip', '-n', HUB, 'link', 'add', 'br0', 'type', 'bridge');
    sh('ip', '-n', HUB, 'link', 'set', 'br0', 'up');
    for (const p of PODS) {
      const name = `${TAG}-${p.key}`;
      netnsAdd(name);
      sh('ip', 'link', 'add', 'eth0', 'netns', name, 'type', 'veth', 'peer', 'name', `v${p.key}`, 'netns', HUB);
      sh('ip', '-n', name, 'addr', 'add', `${p.ip}/24`, 'dev', 'eth0');
      sh('ip', '-n', name, 'link', 'set', 'eth0', 'up');
      sh('ip', '-n', HUB, 'link', 'set', `v${p.key}`, 'master', 'br0', 'up');
      if (p.mesh) await installRules(netnsOf(p.key));
    }
    dir = mkdtempSync(join(tmpdir(), `ambt-authz-${process.pid}-`));
    ca = await CertificateAuthority.loadOrCreate(join(dir, 'ca'));
    const signer = (csr: string, ttl: number) => ca.signWorkloadCsr(csr, ttl);
    state.apply({ workloads: { upsert: PODS.filter((p) => p.mesh).map(wl) } });
    const authorize = stateAuthorizer(state);
    for (const p of PODS.filter((x) => x.mesh)) {
      const fd = native.openNetns(netnsOf(p.key));
      fds.push(fd);
      const pod: LocalPod = { uid: p.key, name: p.key, namespace: p.ns, serviceAccount: p.sa, ips: [p.ip], netnsFd: fd };
      const cm = new CertificateManager({ signer, trustDomain: TD });
      const pool = new HbonePool();
      const tracker = new ConnectionTracker({ accessLog: false });
      certs.push(cm);
      pools.push(pool);
      trackers.set(p.key, tracker);
      const proxy = new PodProxy({ pod, sockets: netnsPodSockets(fd), state, certs: cm, pool, connections: tracker, trustDomain: TD, authorize });
      await proxy.start();
      await proxy.whenHboneReady();
      proxies.push(proxy);
    }
    const srvTracker = trackers.get('srv')!;
    srvTracker.on('close', (c) => srvClosed.push(c));
    rechecker = new PolicyRechecker({ state, authorize, records: () => srvTracker.recordsOf('srv') });
    rechecker.start();
    for (const port of [8080, 8081]) servers.push((await startApp(netnsOf('srv'), port)).server);
    servers.push(await startEcho(netnsOf('srv'), 9000));
  });

  after(async () => {
    rechecker?.stop();
    for (const p of proxies) await p.stop(0).catch(() => {});
    for (const p of pools) p.close();
    for (const c of certs) c.stop();
    for (const s of servers) s.close();
    for (const fd of fds) native.closeFd(fd);
    for (const p of PODS) netnsDel(`${TAG}-${p.key}`);
    netnsDel(HUB);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('no policy: mesh clients (HBONE) and the outside client (plaintext, PERMISSIVE by default) get through', async () => {
    setPolicies([]);
    for (const from of ['c1', 'c2', 'x']) {
      const r = await call(from, 8080);
      assert.ok(r.ok, `${from}: ${JSON.stringify(r)}`);
      assert.equal(r.rec?.error, undefined);
    }
    const c1 = (await call('c1', 8080)).rec!;
    assert.equal(c1.protocol, 'HBONE');
    assert.equal(c1.srcIdentity, `spiffe://${TD}/ns/bar/sa/client`);
    assert.equal((await call('x', 8080)).rec!.protocol, 'TCP');
  });

  it('allow-nothing blocks everyone; the record names the policy', async () => {
    setPolicies([authz('allow-nothing', 'ALLOW', [])]);
    for (const from of ['c1', 'c2', 'x']) {
      const r = await call(from, 8080);
      assert.equal(r.ok, false, from);
      assert.equal(r.data, '');
      assert.match(r.rec?.error ?? '', /^ZT_DENIED: no ALLOW policy matched \(policy foo\/allow-nothing applies\)/, from);
      assert.equal(r.rec?.policy, 'foo/allow-nothing');
    }
  });

  it('deny from a namespace: bar is refused, baz gets through', async () => {
    setPolicies([authz('deny-bar', 'DENY', [[[m({ namespaces: ['bar'] })]]])]);
    const c1 = await call('c1', 8080);
    assert.equal(c1.ok, false);
    assert.equal(c1.error, 'ECONNRESET', 'the client ztunnel got 401 and reset the app connection');
    assert.match(c1.rec?.error ?? '', /ZT_DENIED: denied by DENY policy foo\/deny-bar \(rule 0\)/);
    assert.ok((await call('c2', 8080)).ok);
    assert.ok((await call('x', 8080)).ok, 'plaintext has no namespace');
  });

  it('allow only one principal: baz/other in, bar/client and plaintext out', async () => {
    setPolicies([authz('allow-other', 'ALLOW', [[[m({ principals: [`${TD}/ns/baz/sa/other`] })]]])]);
    assert.ok((await call('c2', 8080)).ok);
    const c1 = await call('c1', 8080);
    assert.equal(c1.ok, false);
    assert.match(c1.rec?.error ?? '', /foo\/allow-other/);
    const x = await call('x', 8080);
    assert.equal(x.ok, false);
    assert.equal(x.error, 'ECONNRESET');
  });

  it('ipBlocks and ports: deny the outside block on 8081 only', async () => {
    setPolicies([authz('deny-x-8081', 'DENY', [[[m({ sourceIps: ['10.81.0.8/29'] })], [m({ destinationPorts: [8081] })]]])]);
    assert.ok((await call('x', 8080)).ok);
    assert.equal((await call('x', 8081)).ok, false);
    assert.ok((await call('c1', 8081)).ok);
  });

  it('STRICT refuses the outside client (reset, record names the PeerAuthentication); PERMISSIVE admits it', async () => {
    setPolicies([], [peerAuthn('strict', 'STRICT')]);
    const x = await call('x', 8080);
    assert.equal(x.ok, false);
    assert.equal(x.error, 'ECONNRESET');
    assert.match(x.rec?.error ?? '', /plaintext refused: PeerAuthentication foo\/strict requires mTLS \(STRICT\) for port 8080/);
    assert.ok((await call('c1', 8080)).ok, 'mTLS clients are fine under STRICT');
    setPolicies([], [peerAuthn('strict', 'PERMISSIVE')]);
    assert.ok((await call('x', 8080)).ok);
  });

  it('port-level override: workload STRICT with 8081 PERMISSIVE; mesh-wide STRICT under a namespace PERMISSIVE', async () => {
    setPolicies([], [peerAuthn('srv', 'STRICT', { scope: 'WORKLOAD', selector: { app: 'srv' }, portLevel: { 8081: 'PERMISSIVE' } })]);
    assert.equal((await call('x', 8080)).ok, false);
    assert.ok((await call('x', 8081)).ok);
    setPolicies([], [
      peerAuthn('default', 'STRICT', { namespace: 'istio-system', scope: 'MESH' }),
      peerAuthn('srv', 'UNSET', { scope: 'WORKLOAD', selector: { app: 'srv' }, portLevel: { 8081: 'STRICT' } }),
      peerAuthn('ns', 'PERMISSIVE'),
    ]);
    assert.ok((await call('x', 8080)).ok, 'namespace PERMISSIVE overrides the mesh');
    const r = await call('x', 8081);
    assert.equal(r.ok, false);
    assert.match(r.rec?.error ?? '', /PeerAuthentication foo\/srv/);
  });

  it('a policy change closes already-open connections it now denies within a second, others stay', async () => {
    setPolicies([]);
    const open = async (from: string): Promise<{ sock: net.Socket; closedAt: Promise<number> }> => {
      const sock = await native.connect({ netns: netnsOf(from), host: SRV, port: 9000, timeoutMs: 5000 });
      sock.on('error', () => {});
      const closedAt = new Promise<number>((resolve) => sock.once('close', () => resolve(performance.now())));
      const echoed = new Promise<string>((resolve) => sock.once('data', (b) => resolve(String(b))));
      sock.write(`ping-${from}`);
      assert.equal(await echoed, `ping-${from}`);
      return { sock, closedAt };
    };
    const c1 = await open('c1');
    const c2 = await open('c2');
    const x = await open('x');
    const n = srvClosed.length;
    const t0 = performance.now();
    setPolicies([authz('deny-bar', 'DENY', [[[m({ namespaces: ['bar'] })]]])]);
    const closedAfter = (await c1.closedAt) - t0;
    assert.ok(closedAfter < 1000, `closed after ${closedAfter} ms`);
    await until(() => srvClosed.length > n, 2000, 'server record');
    const rec = srvClosed.slice(n).find((c) => c.src.startsWith('10.81.0.2:'))!;
    assert.match(rec.error ?? '', /^ZT_POLICY_CHANGED: closed after a policy change: denied by DENY policy foo\/deny-bar/);
    assert.equal(rec.policy, 'foo/deny-bar');
    // the others still talk
    for (const o of [c2, x]) {
      const echoed = new Promise<string>((resolve) => o.sock.once('data', (b) => resolve(String(b))));
      o.sock.write('still-there');
      assert.equal(await echoed, 'still-there');
    }
    // plaintext now under STRICT is closed too
    const t1 = performance.now();
    setPolicies([authz('deny-bar', 'DENY', [[[m({ namespaces: ['bar'] })]]])], [peerAuthn('strict', 'STRICT')]);
    const xAfter = (await x.closedAt) - t1;
    assert.ok(xAfter < 1000, `plaintext closed after ${xAfter} ms`);
    await until(() => srvClosed.some((c) => c.src.startsWith('10.81.0.9:') && /ZT_POLICY_CHANGED/.test(c.error ?? '')), 2000, 'plaintext record');
    assert.match(srvClosed.find((c) => c.src.startsWith('10.81.0.9:') && /ZT_POLICY_CHANGED/.test(c.error ?? ''))!.error!, /PeerAuthentication foo\/strict/);
    const echoed = new Promise<string>((resolve) => c2.sock.once('data', (b) => resolve(String(b))));
    c2.sock.write('mtls-ok');
    assert.equal(await echoed, 'mtls-ok');
    c2.sock.destroy();
    setPolicies([]);
  });
});
