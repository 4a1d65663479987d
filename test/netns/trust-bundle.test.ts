/**
 * Certificates on the real HBONE endpoints (PodProxy's :15008 server and the HbonePool client), over
 * loopback TLS sockets with certificates from real CAs:
 *  - the trust bundle follows the roots CreateCertificate returns, without restarts: an operator
 *    rotates to a new root (old one still trusted) and both agents' server and client contexts
 *    accept the new root for new connections, while an open tunnel keeps working;
 *  - an expired certificate, one from a foreign CA, and one of a foreign trust domain are refused on
 *    :15008 and by our client, with a logged reason that says which (notAfter, unknown CA, trust
 *    domain).
 * No netns needed: the pod's "netns" is the test's own loopback (PodSockets below).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { once } from 'node:events';
import type { Duplex } from 'node:stream';
import { CertificateAuthority } from '../../src/controller/ca/ca.ts';
import { CertificateManager } from '../../src/ztunnel/identity/certificate-manager.ts';
import { createCsr, validateIssued, type Credentials } from '../../src/ztunnel/identity/index.ts';
import { StateStore } from '../../src/ztunnel/state/store.ts';
import { PodProxy } from '../../src/ztunnel/proxy/pod-proxy.ts';
import { HbonePool } from '../../src/ztunnel/proxy/pool.ts';
import { ConnectionTracker } from '../../src/ztunnel/proxy/connections.ts';
import type { HboneRoute, LocalPod, PodSockets } from '../../src/ztunnel/proxy/types.ts';
import type { Workload } from '../../src/api/mesh.ts';
import { PORTS } from '../../src/api/constants.ts';
import { hboneServerOptions } from '../../src/shared/tls.ts';
import { setLogLevel, setLogSink } from '../../src/shared/log.ts';

const TD = 'cluster.local';
const SERVER_ID = `spiffe://${TD}/ns/demo/sa/server`;
const LO = '127.0.0.1';

/** Pod sockets on the test's loopback; remembers which real port stands for each mesh port. */
function loopbackSockets(): PodSockets & { port(meshPort: number): number } {
  const ports = new Map<number, number>();
  return {
    async listen(server, port) {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, LO, () => { server.off('error', reject); resolve(); });
      });
      ports.set(port, (server.address() as net.AddressInfo).port);
    },
    connect(host, port, o) {
      return new Promise((resolve, reject) => {
        const s = net.connect({ host, port });
        const timer = o?.timeoutMs ? setTimeout(() => { s.destroy(); reject(new Error('connect timeout')); }, o.timeoutMs) : undefined;
        s.once('connect', () => { clearTimeout(timer); resolve(s); });
        s.once('error', (e) => { clearTimeout(timer); reject(e); });
      });
    },
    originalDst: () => ({ address: LO, port: 0 }),
    port(meshPort) {
      const p = ports.get(meshPort);
      if (p === undefined) throw new Error(`nothing listens for ${meshPort}`);
      return p;
    },
  };
}

const wl = (uid: string, sa: string): Workload => ({
  uid, name: uid, namespace: 'demo', addresses: [LO], node: 'n1', serviceAccount: sa, trustDomain: TD, protocol: 'HBONE',
  ready: true, labels: {}, canonicalName: uid, canonicalRevision: 'v1', services: {},
});

/** Collects warn lines (text format) while the test runs. */
const lines: string[] = [];
let prevSink: ((l: string) => void) | undefined;

describe('certificates on the HBONE endpoints', { timeout: 60_000 }, () => {
  let tmp: string;
  let ca1: CertificateAuthority; // the original root
  let ca2: CertificateAuthority; // the root an operator rotates to
  let foreign: CertificateAuthority;
  let phase2 = false;
  // The "controller": signs with the current CA and returns the current trust bundle.
  const signer = async (csr: string, ttl: number) => {
    if (!phase2) return ca1.signWorkloadCsr(csr, ttl);
    const r = await ca2.signWorkloadCsr(csr, ttl);
    return { certChainPem: r.certChainPem, rootsPem: ca1.rootCertPem + ca2.rootCertPem };
  };
  let serverCerts: CertificateManager;
  let clientCerts: CertificateManager;
  const serverSockets = loopbackSockets();
  const clientSockets = loopbackSockets();
  const state = new StateStore();
  const serverConns = new ConnectionTracker({ accessLog: false });
  const pool = new HbonePool({ connectTimeoutMs: 3000 });
  let serverProxy: PodProxy;
  let app: net.Server;
  let appPort: number;
  const serverPod: LocalPod = { uid: 'server-uid', name: 'server', namespace: 'demo', serviceAccount: 'server', ips: [LO], netnsFd: -1 };
  const clientPod: LocalPod = { uid: 'client-uid', name: 'client', namespace: 'demo', serviceAccount: 'client', ips: [LO], netnsFd: -1 };
  const route = (): HboneRoute => ({
    kind: 'hbone', hboneAddress: `${LO}:${serverSockets.port(PORTS.hbone)}`, target: `${LO}:${appPort}`, dstIdentity: SERVER_ID, dstWorkload: wl('server-uid', 'server'),
  });
  const open = (creds: Credentials, p = pool): Promise<Duplex> =>
    p.open(route(), { pod: clientPod, sockets: clientSockets }, creds, { address: LO, port: 1 });
  /** One round trip through a tunnel to the echo app. */
  async function echo(s: Duplex, msg: string): Promise<string> {
    s.write(msg);
    let got = '';
    while (got.length < msg.length) got += String((await once(s, 'data'))[0]);
    return got;
  }
  async function hand(authority: CertificateAuthority, id: string, validity?: { notBefore: Date; notAfter: Date }): Promise<Credentials> {
    const { keyPem, csrPem } = await createCsr(id);
    if (!validity) return validateIssued(id, keyPem, await authority.signWorkloadCsr(csrPem));
    const r = await authority.signWorkloadCsrWithValidity(csrPem, validity.notBefore, validity.notAfter);
    return { identity: id, keyPem, certChainPem: r.certChainPem, rootsPem: r.rootsPem, serial: 'x', notBefore: validity.notBefore, notAfter: validity.notAfter };
  }
  const warned = (re: RegExp) => lines.filter((l) => re.test(l));

  before(async () => {
    setLogLevel('warn');
    prevSink = setLogSink((l) => { lines.push(l); });
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'ambt-trust-'));
    ca1 = await CertificateAuthority.loadOrCreate(path.join(tmp, 'ca1'));
    ca2 = await CertificateAuthority.loadOrCreate(path.join(tmp, 'ca2'));
    foreign = await CertificateAuthority.loadOrCreate(path.join(tmp, 'foreign'));
    serverCerts = new CertificateManager({ signer, trustDomain: TD });
    clientCerts = new CertificateManager({ signer, trustDomain: TD });
    state.apply({ workloads: { upsert: [wl('server-uid', 'server'), wl('client-uid', 'client')] } });
    app = net.createServer((s) => { s.on('error', () => {}); s.pipe(s); });
    await new Promise<void>((r) => app.listen(0, LO, r));
    appPort = (app.address() as net.AddressInfo).port;
    serverProxy = new PodProxy({ pod: serverPod, sockets: serverSockets, state, certs: serverCerts, pool: new HbonePool(), connections: serverConns, trustDomain: TD });
    await serverProxy.start();
    await serverProxy.whenHboneReady();
  });

  after(async () => {
    await serverProxy?.stop(0);
    pool.close();
    serverCerts?.stop();
    clientCerts?.stop();
    app?.close();
    if (prevSink) setLogSink(prevSink);
    if (tmp) await fs.rm(tmp, { recursive: true, force: true });
  });

  it('root rotation: both agents take the new trust bundle without a restart; an open tunnel is undisturbed', async () => {
    const clientRef = { namespace: 'demo', serviceAccount: 'client' };
    const client = await clientCerts.get(clientRef);
    const client2Old = await clientCerts.get({ namespace: 'demo', serviceAccount: 'client2' });
    const serverOld = await serverCerts.get({ namespace: 'demo', serviceAccount: 'server' });
    const held = await open(client);
    assert.equal(await echo(held, 'before'), 'before');

    // The operator rotates: the CA now signs with root 2 and hands out [root 1, root 2].
    phase2 = true;
    clientCerts.forget(clientRef);
    const clientNew = await clientCerts.get(clientRef); // chains to root 2
    assert.equal(clientCerts.trustBundle, ca1.rootCertPem + ca2.rootCertPem);
    // The client agent's other identity was re-based onto the new bundle: same certificate.
    const client2 = await clientCerts.get({ namespace: 'demo', serviceAccount: 'client2' });
    assert.equal(client2.serial, client2Old.serial);
    assert.notEqual(client2, client2Old);
    assert.equal(client2.rootsPem, ca1.rootCertPem + ca2.rootCertPem);

    // The server agent has not heard of root 2 yet: it refuses the new client certificate, saying why.
    await assert.rejects(open(clientNew), { code: 'ZT_HBONE_CONNECT' });
    assert.equal(warned(/refusing HBONE peer .*reason="?unknown CA/).length, 1, lines.join('\n'));

    // Any certificate the server agent gets carries the new bundle; its pod's listener follows.
    let bundles = 0;
    const off = serverCerts.onTrustBundle(() => { bundles++; });
    await serverCerts.get({ namespace: 'demo', serviceAccount: 'sidecar' });
    off();
    assert.equal(bundles, 1);
    assert.equal((await serverCerts.get({ namespace: 'demo', serviceAccount: 'server' })).serial, serverOld.serial, 'the server certificate itself was not renewed');
    const fresh = await open(clientNew);
    assert.equal(await echo(fresh, 'root2-client'), 'root2-client');
    fresh.destroy();

    // The server renews onto root 2. A client context still holding only root 1 refuses it (with the
    // reason); the client agent's re-based credentials accept it.
    serverCerts.forget({ namespace: 'demo', serviceAccount: 'server' });
    await serverCerts.get({ namespace: 'demo', serviceAccount: 'server' });
    const stalePool = new HbonePool({ connectTimeoutMs: 3000 });
    try {
      await assert.rejects(open(client2Old, stalePool), (e: Error) => /server certificate refused: unknown CA/.test(e.message));
    } finally {
      stalePool.close();
    }
    assert.ok(warned(/refusing HBONE server .*reason="?unknown CA/).length >= 1);
    const viaRebased = await open(client2);
    assert.equal(await echo(viaRebased, 'rebased'), 'rebased');
    viaRebased.destroy();

    // The tunnel opened before any of this still carries data.
    assert.equal(await echo(held, 'after'), 'after');
    held.destroy();
  });

  it('on :15008: expired, foreign-CA and foreign-trust-domain client certificates are refused with the reason logged', async () => {
    const bundle = ca1.rootCertPem + ca2.rootCertPem;
    const notAfter = new Date(Math.floor((Date.now() - 3600_000) / 1000) * 1000);
    const cases = [
      { name: 'expired', creds: await hand(ca2, `spiffe://${TD}/ns/demo/sa/client`, { notBefore: new Date(Date.now() - 7200_000), notAfter }), reason: `certificate expired: notAfter ${notAfter.toISOString()}` },
      { name: 'foreign CA', creds: await hand(foreign, `spiffe://${TD}/ns/demo/sa/client`), reason: 'unknown CA' },
      // our CA's key, another trust domain in the SAN: the chain verifies, the identity is not ours
      { name: 'foreign trust domain', creds: await hand(await CertificateAuthority.loadOrCreate(path.join(tmp, 'ca2'), { trustDomain: 'evil.local' }), 'spiffe://evil.local/ns/demo/sa/client'), reason: `foreign trust domain: peer identity spiffe://evil.local/ns/demo/sa/client is not in trust domain ${TD}` },
    ];
    const port = serverSockets.port(PORTS.hbone);
    for (const c of cases) {
      const before = lines.length;
      // The client trusts our roots (so it accepts the server); only its own certificate is at fault.
      const sock = tls.connect({
        host: LO, port, ALPNProtocols: ['h2'], servername: '', rejectUnauthorized: false,
        secureContext: tls.createSecureContext({ minVersion: 'TLSv1.3', ca: bundle, cert: c.creds.certChainPem, key: c.creds.keyPem }),
      });
      sock.on('error', () => {});
      let data = '';
      sock.on('data', (d) => { data += String(d); });
      await once(sock, 'close');
      assert.equal(data, '', `${c.name}: no data`);
      const got = lines.slice(before).filter((l) => /refusing HBONE peer/.test(l));
      assert.equal(got.length, 1, `${c.name}: one refusal logged:\n${lines.slice(before).join('\n')}`);
      assert.ok(got[0].includes(c.reason), `${c.name}: reason in ${got[0]}`);
    }
    assert.equal(serverConns.list().length, 0, 'no stream was served to a refused peer');
  });

  it('our client refuses an expired, foreign-CA or wrong-identity server with the reason', async () => {
    const client = await clientCerts.get({ namespace: 'demo', serviceAccount: 'client' });
    const notAfter = new Date(Math.floor((Date.now() - 3600_000) / 1000) * 1000);
    const cases = [
      { name: 'expired', creds: await hand(ca2, SERVER_ID, { notBefore: new Date(Date.now() - 7200_000), notAfter }), reason: `certificate expired: notAfter ${notAfter.toISOString()}` },
      { name: 'foreign CA', creds: await hand(foreign, SERVER_ID), reason: 'unknown CA' },
      { name: 'wrong identity', creds: await hand(ca2, `spiffe://${TD}/ns/demo/sa/imposter`), reason: `peer identity mismatch: expected ${SERVER_ID}, got spiffe://${TD}/ns/demo/sa/imposter` },
    ];
    for (const c of cases) {
      const bad = tls.createServer(hboneServerOptions(c.creds), (s) => s.end());
      bad.on('tlsClientError', () => {});
      await new Promise<void>((r) => bad.listen(0, LO, r));
      const p = new HbonePool({ connectTimeoutMs: 3000 });
      try {
        const r = { ...route(), hboneAddress: `${LO}:${(bad.address() as net.AddressInfo).port}` };
        await assert.rejects(
          p.open(r, { pod: clientPod, sockets: clientSockets }, client, { address: LO, port: 1 }),
          (e: Error & { code?: string }) => e.code === 'ZT_HBONE_CONNECT' && e.message.includes(`server certificate refused: ${c.reason}`),
          c.name,
        );
        assert.ok(warned(/refusing HBONE server/).some((l) => l.includes(c.reason)), `${c.name}: logged`);
      } finally {
        p.close();
        await new Promise<void>((r) => bad.close(() => r()));
      }
    }
  });
});
