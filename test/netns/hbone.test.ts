/**
 * The data path end to end in real network namespaces: a "client pod" and a "server pod" joined by
 * a veth, each with the production in-pod rules and a PodProxy (native sockets in its netns),
 * certificates from a real CA, plus an "outside" netns for passthrough and plaintext inbound.
 *
 *   client 10.77.0.2 (vc0) <-> (vs0) 10.77.0.3 server
 *   client 10.78.0.2 (vx0) <-> (ve0) 10.78.0.3 outside 10.79.0.2 (ve1) <-> (vy0) 10.79.0.1 server
 */
import { outstanding, relayStats, sharedRegions } from '../../src/ztunnel/proxy/read-regions.ts';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import * as tls from 'node:tls';
import * as http2 from 'node:http2';
import { once } from 'node:events';
import { SOCKET_MARK } from '../../src/api/constants.ts';
import { hboneClientOptions } from '../../src/shared/tls.ts';
import * as native from '../../src/native/index.ts';
import { install as installRules } from '../../src/cni/in-pod-rules.ts';
import { CertificateAuthority } from '../../src/controller/ca/ca.ts';
import { CertificateManager } from '../../src/ztunnel/identity/certificate-manager.ts';
import { createCsr } from '../../src/ztunnel/identity/csr.ts';
import { validateIssued } from '../../src/ztunnel/identity/credentials.ts';
import type { Credentials } from '../../src/ztunnel/identity/credentials.ts';
import { StateStore } from '../../src/ztunnel/state/store.ts';
import { PodProxy } from '../../src/ztunnel/proxy/pod-proxy.ts';
import { netnsPodSockets } from '../../src/ztunnel/proxy/pod-sockets.ts';
import { HbonePool } from '../../src/ztunnel/proxy/pool.ts';
import { ConnectionTracker } from '../../src/ztunnel/proxy/connections.ts';
import type { ClosedConnection } from '../../src/ztunnel/proxy/connections.ts';
import { decideOutbound } from '../../src/ztunnel/proxy/decide.ts';
import type { HboneRoute, LocalPod, PodSockets } from '../../src/ztunnel/proxy/types.ts';
import type { MeshService, Workload } from '../../src/api/mesh.ts';
import { setLogLevel } from '../../src/shared/log.ts';
import { capture, converse, netnsAdd, netnsDel, removeLeftoverDirs, removeLeftovers, sh, startApp, startServerFirstApp, talk, until, vethPair } from './hbone-helpers.ts';
import type { AppConn } from './hbone-helpers.ts';

setLogLevel((process.env.AMBIT_LOG_LEVEL as 'debug' | undefined) ?? 'warn');

// Names carry our pid so parallel runs never collide; removeLeftovers() deletes those of dead runs.
const C = `ambt-hb${process.pid}-c`;
const S = `ambt-hb${process.pid}-s`;
const X = `ambt-hb${process.pid}-x`;
const CLIENT_IP = '10.77.0.2';
const SERVER_IP = '10.77.0.3';
const EXT_IP = '10.78.0.3';
const EXT_CLIENT_IP = '10.79.0.2';
const VIP = '10.96.0.10';
const TD = 'cluster.local';
const CLIENT_ID = `spiffe://${TD}/ns/demo/sa/client`;
const SERVER_ID = `spiffe://${TD}/ns/demo/sa/server`;

function wl(uid: string, ip: string, sa: string): Workload {
  return {
    uid, name: uid, namespace: 'demo', addresses: [ip], node: 'n1', serviceAccount: sa, trustDomain: TD, protocol: 'HBONE',
    ready: true, labels: {}, canonicalName: uid, canonicalRevision: 'v1', services: { 'demo/echo': { 80: 8080 } },
  };
}
const echoSvc: MeshService = {
  name: 'echo', namespace: 'demo', hostname: 'echo.demo.svc.cluster.local', vips: [VIP],
  ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }],
  endpoints: [{ workloadUid: 'server-uid', address: SERVER_IP, ports: { 80: 8080 }, ready: true }],
};

describe('HBONE data path between two pod netns', { timeout: 120_000 }, () => {
  let dir: string;
  let ca: CertificateAuthority;
  const fds: number[] = [];
  const servers: net.Server[] = [];
  let clientPod: LocalPod;
  let serverPod: LocalPod;
  let clientSockets: PodSockets;
  let clientProxy: PodProxy;
  let serverProxy: PodProxy;
  const clientPool = new HbonePool();
  const serverPool = new HbonePool();
  const clientConns = new ConnectionTracker();
  const serverConns = new ConnectionTracker();
  const clientClosed: ClosedConnection[] = [];
  const serverClosed: ClosedConnection[] = [];
  let clientCerts: CertificateManager;
  let serverCerts: CertificateManager;
  let appConns: AppConn[];
  let extConns: AppConn[];
  const state = new StateStore();
  const cPath = `/var/run/netns/${C}`;
  const sPath = `/var/run/netns/${S}`;
  const xPath = `/var/run/netns/${X}`;
  let failed = false;

  async function issue(authority: CertificateAuthority, ns: string, sa: string): Promise<Credentials> {
    const id = `spiffe://${authority.trustDomain}/ns/${ns}/sa/${sa}`;
    const { keyPem, csrPem } = await createCsr(id);
    return validateIssued(id, keyPem, await authority.signWorkloadCsr(csrPem));
  }

  before(async () => {
    removeLeftovers(/^ambt-hb(\d+)-[csx]$/);
    removeLeftoverDirs(/^ambt-hbone-(\d+)-/);
    for (const n of [C, S, X]) netnsAdd(n);
    vethPair(C, 'vc0', `${CLIENT_IP}/24`, S, 'vs0', `${SERVER_IP}/24`);
    vethPair(C, 'vx0', '10.78.0.2/24', X, 've0', `${EXT_IP}/24`);
    vethPair(X, 've1', `${EXT_CLIENT_IP}/24`, S, 'vy0', '10.79.0.1/24');
    sh('ip', '-n', C, 'route', 'add', 'default', 'dev', 'vc0'); // service VIPs are routed like a cluster would
    sh('ip', '-n', X, 'route', 'add', '10.77.0.0/24', 'via', '10.79.0.1');
    sh('ip', '-n', S, 'route', 'add', '10.78.0.0/24', 'via', '10.79.0.2');
    await installRules(cPath);
    await installRules(sPath);

    dir = mkdtempSync(join(tmpdir(), `ambt-hbone-${process.pid}-`));
    ca = await CertificateAuthority.loadOrCreate(join(dir, 'ca'));
    const signer = (csr: string, ttl: number) => ca.signWorkloadCsr(csr, ttl);
    clientCerts = new CertificateManager({ signer, trustDomain: TD });
    serverCerts = new CertificateManager({ signer, trustDomain: TD });

    state.apply({ workloads: { upsert: [wl('client-uid', CLIENT_IP, 'client'), wl('server-uid', SERVER_IP, 'server')] }, services: { upsert: [echoSvc] } });
    clientConns.on('close', (c) => clientClosed.push(c));
    serverConns.on('close', (c) => serverClosed.push(c));

    const cfd = native.openNetns(cPath);
    const sfd = native.openNetns(sPath);
    fds.push(cfd, sfd);
    clientPod = { uid: 'client-uid', name: 'client-uid', namespace: 'demo', serviceAccount: 'client', ips: [CLIENT_IP], netnsFd: cfd };
    serverPod = { uid: 'server-uid', name: 'server-uid', namespace: 'demo', serviceAccount: 'server', ips: [SERVER_IP], netnsFd: sfd };
    clientSockets = netnsPodSockets(cfd);
    clientProxy = new PodProxy({ pod: clientPod, sockets: clientSockets, state, certs: clientCerts, pool: clientPool, connections: clientConns, trustDomain: TD });
    serverProxy = new PodProxy({ pod: serverPod, sockets: netnsPodSockets(sfd), state, certs: serverCerts, pool: serverPool, connections: serverConns, trustDomain: TD });
    await clientProxy.start();
    await serverProxy.start();
    await serverProxy.whenHboneReady();

    const app = await startApp(sPath, 8080);
    const ext = await startApp(xPath, 9090);
    servers.push(app.server, ext.server);
    appConns = app.conns;
    extConns = ext.conns;
  });

  after(async () => {
    const keep = failed && process.env.AMBIT_TEST_KEEP === '1';
    if (failed) {
      console.error(keep
        ? `kept for inspection: ip netns exec ${C} bash | ip netns exec ${S} bash | ip netns exec ${X} bash (iptables-save, ss -tanp); remove with: ip netns del NAME`
        : `namespaces ${C} ${S} ${X} removed; rerun with AMBIT_TEST_KEEP=1 to keep them and enter with: ip netns exec ${C} bash`);
    }
    await clientProxy?.stop(0).catch(() => {});
    await serverProxy?.stop(0).catch(() => {});
    clientPool.close();
    serverPool.close();
    clientCerts?.stop();
    serverCerts?.stop();
    for (const s of servers) s.close();
    for (const fd of fds) native.closeFd(fd);
    if (!keep) for (const n of [C, S, X]) netnsDel(n);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const check = (name: string, fn: () => Promise<void>) =>
    it(name, async () => {
      try {
        await fn();
      } catch (err) {
        failed = true;
        throw err;
      }
    });

  check('pod IP: the app gets the data over HBONE, sees the client pod IP, no plaintext on the wire', async () => {
    const marker = `AMBIT-PLAINTEXT-MARKER-${process.pid}`;
    const cap = await capture(S, 'vs0', join(dir, 'vs0.pcap'));
    const before = appConns.length;
    const r = await talk(cPath, SERVER_IP, 8080, marker + 'x'.repeat(100_000));
    const pcap = await cap.stop();
    assert.equal(r.error, undefined);
    assert.equal(r.data, `${CLIENT_IP}|${marker.length + 100_000}|${marker}${'x'.repeat(40 - marker.length)}`);
    assert.equal(appConns.length, before + 1);
    assert.equal(appConns.at(-1)!.peer, CLIENT_IP);
    assert.ok(pcap.length > 10_000, `capture has the tunnel's packets (${pcap.length} bytes)`);
    assert.equal(pcap.includes(Buffer.from(marker)), false, 'the marker crossed the veth in plaintext');
    // one record on each side, closed once, with identities and byte counts
    await until(() => serverClosed.some((c) => c.dst === `${SERVER_IP}:8080`), 2000, 'inbound record');
    const inbound = serverClosed.find((c) => c.dst === `${SERVER_IP}:8080`)!;
    assert.equal(inbound.direction, 'inbound');
    assert.equal(inbound.srcIdentity, CLIENT_ID);
    assert.equal(inbound.srcWorkload, 'demo/client-uid');
    assert.equal(inbound.bytesSent, marker.length + 100_000);
    assert.equal(inbound.error, undefined);
    const outbound = clientClosed.find((c) => c.dst === `${SERVER_IP}:8080`)!;
    assert.equal(outbound.direction, 'outbound');
    assert.equal(outbound.dstIdentity, SERVER_ID);
    assert.equal(outbound.hboneAddr, `${SERVER_IP}:15008`);
    assert.equal(outbound.bytesReceived, r.data.length);
    assert.equal(clientConns.size, 0);
  });

  check('half-close from the server side: the client still sends after the app closed its side', async () => {
    const app = await startServerFirstApp(sPath, 8081);
    servers.push(app.server);
    const sock = await native.connect({ netns: cPath, host: SERVER_IP, port: 8081 });
    sock.allowHalfOpen = true;
    let got = '';
    sock.on('data', (b) => (got += b));
    await once(sock, 'end'); // the app's FIN came through the tunnel
    assert.equal(got, `hello|${CLIENT_IP}`);
    sock.end(Buffer.alloc(300_000, 7)); // our direction is still open
    await once(sock, 'close');
    await until(() => app.received.length === 1, 3000, 'the app to see our FIN');
    assert.equal(app.received[0], 300_000);
    await until(() => serverClosed.some((c) => c.dst === `${SERVER_IP}:8081`), 2000, 'inbound record');
    const rec = serverClosed.find((c) => c.dst === `${SERVER_IP}:8081`)!;
    assert.equal(rec.error, undefined);
    assert.deepEqual([rec.bytesSent, rec.bytesReceived], [300_000, `hello|${CLIENT_IP}`.length]);
  });

  check('32 MiB echoed both ways at once arrive intact (flow control, backpressure)', async () => {
    const echo = net.createServer({ allowHalfOpen: true }, (s) => { s.on('error', () => {}); s.pipe(s); });
    await native.listen(echo, { netns: sPath, host: '0.0.0.0', port: 8082 });
    servers.push(echo);
    const data = randomBytes(32 << 20);
    const inPlaceBefore = relayStats.inPlace;
    const sock = await native.connect({ netns: cPath, host: SERVER_IP, port: 8082 });
    const back = createHash('sha256');
    let n = 0;
    sock.on('data', (b: Buffer) => { n += b.length; back.update(b); });
    sock.end(data);
    await once(sock, 'close');
    assert.equal(n, data.length);
    assert.equal(back.digest('hex'), createHash('sha256').update(data).digest('hex'));
    // plain -> HBONE reads (client on 15001, the echo app's answer) went through pool regions;
    // each direction's first 4 MiB fit the stream window, so at least 16 full-size reads each
    assert.ok(relayStats.inPlace - inPlaceBefore >= 2 * 16, `reads relayed in place: ${relayStats.inPlace - inPlaceBefore}`);
    await until(() => outstanding(sharedRegions) === 0, 3000, `every read region back in the pool (${outstanding(sharedRegions)} out)`);
  });

  check('service VIP: routed to the endpoint target port over HBONE', async () => {
    const r = await talk(cPath, VIP, 80, 'via-vip');
    assert.equal(r.error, undefined);
    assert.equal(r.data, `${CLIENT_IP}|7|via-vip`);
    const rec = clientClosed.find((c) => c.service === 'echo.demo.svc.cluster.local');
    assert.equal(rec?.dst, `${SERVER_IP}:8080`);
    assert.equal(rec?.protocol, 'HBONE');
  });

  check('service port not on the VIP: the client connection is reset (ZT_NO_ROUTE)', async () => {
    const r = await talk(cPath, VIP, 81, 'nope');
    assert.equal(r.data, '');
    assert.ok(clientClosed.some((c) => c.dst === `${VIP}:81` && c.error?.startsWith('ZT_NO_ROUTE')));
  });

  check('CONNECT to a port with no app: 503 and the client connection is closed', async () => {
    const r = await talk(cPath, SERVER_IP, 8099, 'nobody-home');
    assert.equal(r.data, '');
    assert.ok(r.closed);
    await until(() => clientClosed.some((c) => c.dst === `${SERVER_IP}:8099`), 2000, 'outbound record');
    assert.match(clientClosed.find((c) => c.dst === `${SERVER_IP}:8099`)!.error ?? '', /ZT_HBONE_503/);
    assert.ok(serverClosed.some((c) => c.dst === `${SERVER_IP}:8099` && c.error !== undefined));
  });

  check('CONNECT whose authority is not the pod: 400', async () => {
    const creds = await clientCerts.get({ namespace: 'demo', serviceAccount: 'client' });
    const route = decideOutbound(state, undefined, { address: SERVER_IP, port: 8080 }) as HboneRoute;
    const bad = { ...route, target: '10.77.0.99:8080' };
    await assert.rejects(clientPool.open(bad, { pod: clientPod, sockets: clientSockets }, creds, { address: CLIENT_IP, port: 1 }), { code: 'ZT_HBONE_400' });
    // and a method other than CONNECT: 405
    const raw = await native.connect({ netns: cPath, host: SERVER_IP, port: 15008, mark: SOCKET_MARK });
    const t = tls.connect({ ...hboneClientOptions(creds, SERVER_ID), socket: raw });
    const session = http2.connect(`https://${SERVER_IP}:15008`, { createConnection: () => t });
    try {
      const req = session.request({ ':method': 'GET', ':path': '/', ':authority': `${SERVER_IP}:8080` });
      const [headers] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
      assert.equal(headers[':status'], 405);
    } finally {
      session.destroy();
    }
  });

  check('peers that must be refused: wrong server identity, foreign CA, foreign trust domain', async () => {
    const route = decideOutbound(state, undefined, { address: SERVER_IP, port: 8080 }) as HboneRoute;
    const src = { pod: clientPod, sockets: clientSockets };
    const client = { address: CLIENT_IP, port: 1 };
    const pool = new HbonePool({ connectTimeoutMs: 3000 });
    try {
      const good = await clientCerts.get({ namespace: 'demo', serviceAccount: 'client' });
      // we expect a different identity than the server has
      await assert.rejects(pool.open({ ...route, dstIdentity: `spiffe://${TD}/ns/demo/sa/other` }, src, good, client), { code: 'ZT_HBONE_CONNECT' });
      // a client certificate from another CA
      const foreign = await CertificateAuthority.loadOrCreate(join(dir, 'foreign-ca'));
      await assert.rejects(pool.open(route, src, await issue(foreign, 'demo', 'client'), client), (e: { code?: string }) => /^ZT_HBONE_/.test(e.code ?? ''));
      // our CA's key, but another trust domain in the SAN: chain ok, identity not ours
      const otherTd = await CertificateAuthority.loadOrCreate(join(dir, 'ca'), { trustDomain: 'evil.local' });
      await assert.rejects(pool.open(route, src, await issue(otherTd, 'demo', 'client'), client), (e: { code?: string }) => /^ZT_HBONE_/.test(e.code ?? ''));
      assert.equal(serverClosed.filter((c) => c.srcIdentity !== CLIENT_ID).length, 0, 'no stream was served to a refused peer');
    } finally {
      pool.close();
    }
  });

  check('non-mesh client into 15006: delivered with the client IP', async () => {
    const r = await talk(xPath, SERVER_IP, 8080, 'plain-hello');
    assert.equal(r.error, undefined);
    assert.equal(r.data, `${EXT_CLIENT_IP}|11|plain-hello`);
    const rec = serverClosed.find((c) => c.src.startsWith(EXT_CLIENT_IP));
    assert.equal(rec?.protocol, 'TCP');
    assert.equal(rec?.srcIdentity, undefined);
  });

  check('passthrough to an address outside the mesh (plaintext, as sent)', async () => {
    const marker = `AMBIT-PASSTHROUGH-${process.pid}`;
    const cap = await capture(C, 'vx0', join(dir, 'vx0.pcap'));
    const r = await talk(cPath, EXT_IP, 9090, marker);
    const pcap = await cap.stop();
    assert.equal(r.error, undefined);
    // straight out of the client pod's interface toward that network (no tunnel, no spoofing)
    assert.equal(r.data, `10.78.0.2|${marker.length}|${marker}`);
    assert.equal(extConns.at(-1)!.peer, '10.78.0.2');
    assert.ok(pcap.includes(Buffer.from(marker)), 'positive control: tcpdump sees plaintext when it is plaintext');
    const rec = clientClosed.find((c) => c.dst === `${EXT_IP}:9090`);
    assert.equal(rec?.protocol, 'TCP');
  });

  check('20 parallel connections share one HTTP/2 session', async () => {
    const socks = await Promise.all(Array.from({ length: 20 }, () => native.connect({ netns: cPath, host: SERVER_IP, port: 8080 })));
    for (const s of socks) s.write('p');
    await until(() => serverConns.list().length === 20, 5000, '20 inbound connections');
    const sessions = clientPool.sessions().filter((s) => s.hboneAddress === `${SERVER_IP}:15008`);
    assert.equal(sessions.length, 1, JSON.stringify(sessions));
    assert.equal(sessions[0].activeStreams, 20);
    const results = await Promise.all(socks.map((s, i) => converse(s, String(i % 10))));
    for (const r of results) assert.match(r.data, new RegExp(`^${CLIENT_IP}\\|2\\|p\\d$`));
    await until(() => clientPool.sessions().every((s) => s.activeStreams === 0), 2000, 'streams released');
  });

  check('more than 100 concurrent streams: a second session', async () => {
    const socks = await Promise.all(Array.from({ length: 120 }, () => native.connect({ netns: cPath, host: SERVER_IP, port: 8080 })));
    for (const s of socks) s.write('q');
    await until(() => serverConns.list().length === 120, 10_000, '120 inbound connections');
    const sessions = clientPool.sessions().filter((s) => s.hboneAddress === `${SERVER_IP}:15008`);
    assert.deepEqual(sessions.map((s) => s.activeStreams).sort((a, b) => a - b), [20, 100]);
    const results = await Promise.all(socks.map((s) => converse(s, '!')));
    for (const r of results) assert.equal(r.data, `${CLIENT_IP}|2|q!`);
  });

  check('certificate rotation: new sessions use the new certificates, old sessions drain', async () => {
    const clientRef = { namespace: 'demo', serviceAccount: 'client' };
    const serverRef = { namespace: 'demo', serviceAccount: 'server' };
    const old = await clientCerts.get(clientRef);
    const held = await native.connect({ netns: cPath, host: SERVER_IP, port: 8080 });
    held.write('held');
    await until(() => clientPool.sessions().some((s) => s.serial === old.serial && s.activeStreams === 1), 3000, 'a stream on the old session');
    // forget + get = a fresh certificate, announced through onRotate like a renewal
    clientCerts.forget(clientRef);
    serverCerts.forget(serverRef);
    const fresh = await clientCerts.get(clientRef);
    const freshServer = await serverCerts.get(serverRef);
    assert.notEqual(fresh.serial, old.serial);
    const r = await talk(cPath, SERVER_IP, 8080, 'after-rotate');
    assert.equal(r.data, `${CLIENT_IP}|12|after-rotate`);
    const sessions = clientPool.sessions().filter((s) => s.hboneAddress === `${SERVER_IP}:15008`);
    assert.deepEqual(sessions.map((s) => [s.serial === fresh.serial, s.draining, s.activeStreams]).sort(), [[false, true, 1], [true, false, 0]]);
    // the server presents its new certificate to new connections
    const raw = await native.connect({ netns: cPath, host: SERVER_IP, port: 15008, mark: SOCKET_MARK });
    const t = tls.connect({ ...hboneClientOptions(fresh, SERVER_ID), socket: raw });
    await once(t, 'secureConnect');
    assert.equal(t.getPeerX509Certificate()?.serialNumber, freshServer.serial);
    t.destroy();
    // the held connection still works, and its old session goes away once it is done
    const done = await converse(held, '!');
    assert.equal(done.data, `${CLIENT_IP}|5|held!`);
    await until(() => !clientPool.sessions().some((s) => s.serial === old.serial), 2000, 'the old session to close');
  });

  check('server agent restart: the client pool drops the dead session and the next connection works', async () => {
    assert.equal((await talk(cPath, SERVER_IP, 8080, 'one')).data, `${CLIENT_IP}|3|one`);
    assert.ok(clientPool.sessions().length >= 1);
    await serverProxy.stop(0);
    serverProxy = new PodProxy({ pod: serverPod, sockets: netnsPodSockets(serverPod.netnsFd), state, certs: serverCerts, pool: serverPool, connections: serverConns, trustDomain: TD });
    await serverProxy.start();
    await serverProxy.whenHboneReady();
    const r = await talk(cPath, SERVER_IP, 8080, 'two');
    assert.equal(r.error, undefined);
    assert.equal(r.data, `${CLIENT_IP}|3|two`);
  });

  check('certificate late (controller away): start() does not wait for it, 15008 opens as soon as it is issued', async () => {
    let controllerUp = false;
    const lateCerts = new CertificateManager({
      signer: async (csr, ttl) => {
        if (!controllerUp) throw new Error('controller unreachable');
        return ca.signWorkloadCsr(csr, ttl);
      },
      trustDomain: TD,
      backoff: { initialMs: 60_000 }, // only retryNow() (controller back) brings it
    });
    const xfd = native.openNetns(xPath);
    fds.push(xfd);
    const late = new PodProxy({
      pod: { uid: 'late-uid', name: 'late', namespace: 'demo', serviceAccount: 'late', ips: [EXT_IP], netnsFd: xfd },
      sockets: netnsPodSockets(xfd), state, certs: lateCerts, pool: clientPool, connections: serverConns, trustDomain: TD, certWaitMs: 200,
    });
    try {
      const t0 = Date.now();
      await late.start();
      assert.ok(Date.now() - t0 < 2000, `start() took ${Date.now() - t0} ms`);
      let ready = false;
      late.whenHboneReady().then(() => (ready = true), () => {});
      await new Promise((r) => setTimeout(r, 1200));
      assert.equal(ready, false);
      assert.match(sh('ip', 'netns', 'exec', X, 'ss', '-Hltn'), /:15001\b/);
      controllerUp = true;
      lateCerts.retryNow();
      await until(() => ready, 400, 'the HBONE listener right after the certificate was issued');
      assert.match(sh('ip', 'netns', 'exec', X, 'ss', '-Hltn'), /:15008\b/);
    } finally {
      await late.stop(0);
      lateCerts.stop();
    }
    assert.doesNotMatch(sh('ip', 'netns', 'exec', X, 'ss', '-Hltn'), /:1500[168]\b/, 'listeners gone after stop');
  });

  check('stop(drain): listeners close, open connections are cut after the drain period', async () => {
    const open = await native.connect({ netns: cPath, host: SERVER_IP, port: 8080 });
    open.write('x');
    await until(() => clientConns.size === 1, 3000, 'an open connection');
    let closedAt = 0;
    open.on('error', () => {});
    open.on('close', () => (closedAt = Date.now()));
    const t0 = Date.now();
    await clientProxy.stop(300);
    const took = Date.now() - t0;
    assert.ok(took >= 280 && took < 3000, `stop took ${took} ms`);
    await until(() => closedAt > 0, 2000, 'the open connection to be closed');
    assert.equal(clientConns.size, 0);
    const r = await talk(cPath, SERVER_IP, 8080, 'after-stop');
    assert.equal(r.data, '');
    assert.equal(r.error, 'ECONNREFUSED', `got ${r.error}`);
  });
});
