import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { CertificateAuthority } from '../../src/controller/ca/ca.ts';
import { createCsr, validateIssued, type Credentials } from '../../src/ztunnel/identity/index.ts';
import { hboneClientOptions, hboneServerOptions, peerSpiffeId, checkPeerTrustDomain, parseSpiffeId, splitAltNames } from '../../src/shared/tls.ts';

let tmp: string;
let ca: CertificateAuthority;
let foreignCa: CertificateAuthority;
let serverCreds: Credentials;
let clientCreds: Credentials;
const SERVER_ID = 'spiffe://cluster.local/ns/demo/sa/server';
const CLIENT_ID = 'spiffe://cluster.local/ns/demo/sa/client';

async function creds(authority: CertificateAuthority, id: string, validity?: { notBefore: Date; notAfter: Date }): Promise<Credentials> {
  const { keyPem, csrPem } = await createCsr(id);
  const res = validity
    ? await authority.signWorkloadCsrWithValidity(csrPem, validity.notBefore, validity.notAfter)
    : await authority.signWorkloadCsr(csrPem);
  if (validity) { // validateIssued refuses expired certificates; build the record by hand for the test
    return { identity: id, keyPem, certChainPem: res.certChainPem, rootsPem: res.rootsPem, serial: '', notBefore: validity.notBefore, notAfter: validity.notAfter };
  }
  return validateIssued(id, keyPem, res);
}

before(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'ambit-tls-test-'));
  ca = await CertificateAuthority.loadOrCreate(path.join(tmp, 'ca'));
  foreignCa = await CertificateAuthority.loadOrCreate(path.join(tmp, 'foreign'));
  serverCreds = await creds(ca, SERVER_ID);
  clientCreds = await creds(ca, CLIENT_ID);
});
after(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

interface ServerSide { accepted: tls.TLSSocket[]; clientErrors: Error[]; port: number; close(): Promise<void> }

async function startServer(c: Credentials): Promise<ServerSide> {
  const accepted: tls.TLSSocket[] = [];
  const clientErrors: Error[] = [];
  const server = tls.createServer(hboneServerOptions(c), (s) => {
    accepted.push(s);
    s.end(`hello ${peerSpiffeId(s)}`);
  });
  server.on('tlsClientError', (err) => clientErrors.push(err));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    accepted, clientErrors, port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((r) => { for (const s of accepted) s.destroy(); server.close(() => r()); }),
  };
}

/** Connects and reads until the server closes; resolves with what happened. */
function dial(opts: tls.ConnectionOptions): Promise<{ socket: tls.TLSSocket; data: string; error?: Error }> {
  return new Promise((resolve) => {
    const socket = tls.connect(opts);
    let data = '';
    let done = false;
    const finish = (error?: Error) => { if (!done) { done = true; socket.destroy(); resolve({ socket, data, error }); } };
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => { data += d; });
    socket.on('end', () => finish());
    socket.on('error', (e) => finish(e));
    socket.on('close', () => finish());
    setTimeout(() => finish(new Error('test timeout')), 5000).unref();
  });
}

test('HBONE handshake: TLS 1.3, ALPN h2, both identities verified, no SNI', async () => {
  const srv = await startServer(serverCreds);
  try {
    for (const host of ['127.0.0.1', 'localhost']) {
      let alpn: string | false | null = null;
      let proto: string | null = null;
      let serverSeen: string | undefined;
      const res = await new Promise<{ data: string; error?: Error }>((resolve) => {
        const s = tls.connect({ host, port: srv.port, family: 4, ...hboneClientOptions(clientCreds, SERVER_ID) } as tls.ConnectionOptions, () => {
          alpn = s.alpnProtocol;
          proto = s.getProtocol();
          serverSeen = peerSpiffeId(s);
        });
        let data = '';
        s.setEncoding('utf8');
        s.on('data', (d: string) => { data += d; });
        s.on('end', () => resolve({ data }));
        s.on('error', (error) => resolve({ data, error }));
      });
      assert.equal(res.error, undefined, `handshake via ${host}: ${res.error?.message}`);
      assert.equal(alpn, 'h2');
      assert.equal(proto, 'TLSv1.3');
      assert.equal(serverSeen, SERVER_ID);
      assert.equal(res.data, `hello ${CLIENT_ID}`);
      const accepted = srv.accepted.at(-1)!;
      assert.equal(accepted.alpnProtocol, 'h2');
      assert.ok(!accepted.servername, `no SNI expected when dialing ${host}, server saw ${JSON.stringify(accepted.servername)}`);
      assert.deepEqual(checkPeerTrustDomain(accepted, 'cluster.local'),
        { trustDomain: 'cluster.local', namespace: 'demo', serviceAccount: 'client', spiffeId: CLIENT_ID });
      assert.equal(checkPeerTrustDomain(accepted, 'other.local'), undefined);
      assert.match(accepted.getCipher().standardName, /^TLS_AES_(256|128)_GCM_SHA(384|256)$/);
    }
    assert.deepEqual(srv.clientErrors, []);
  } finally {
    await srv.close();
  }
});

test('client expecting another identity rejects the server with a clear error', async () => {
  const srv = await startServer(serverCreds);
  try {
    const r = await dial({ host: '127.0.0.1', port: srv.port, ...hboneClientOptions(clientCreds, 'spiffe://cluster.local/ns/demo/sa/someone-else') });
    assert.ok(r.error, 'connection must fail');
    assert.match(r.error.message, /expected spiffe:\/\/cluster\.local\/ns\/demo\/sa\/someone-else, got spiffe:\/\/cluster\.local\/ns\/demo\/sa\/server/);
    assert.equal(r.data, '');
  } finally {
    await srv.close();
  }
});

test('server certificate from a foreign CA is rejected by the client', async () => {
  const foreignServer = await creds(foreignCa, SERVER_ID);
  const srv = await startServer(foreignServer);
  try {
    const r = await dial({ host: '127.0.0.1', port: srv.port, ...hboneClientOptions(clientCreds, SERVER_ID) });
    assert.ok(r.error);
    assert.match(r.error.message, /self-signed|unable to verify|unknown ca|local issuer/i);
  } finally {
    await srv.close();
  }
});

for (const c of [
  { name: 'client cert from a foreign CA', make: () => creds(foreignCa, CLIENT_ID), reason: /UNABLE_TO_GET_ISSUER_CERT|UNABLE_TO_VERIFY_LEAF|SELF_SIGNED/ },
  {
    name: 'expired client cert',
    make: () => creds(ca, CLIENT_ID, { notBefore: new Date(Date.now() - 7200_000), notAfter: new Date(Date.now() - 3600_000) }),
    reason: /CERT_HAS_EXPIRED/,
  },
  // node reports a missing peer certificate as UNABLE_TO_GET_ISSUER_CERT
  { name: 'no client cert', make: async () => undefined, reason: /UNABLE_TO_GET_ISSUER_CERT/ },
]) {
  test(`server rejects: ${c.name}`, async () => {
    const cc = await c.make();
    // The client trusts OUR roots (so it accepts the server); only its own certificate is at fault.
    const base = hboneClientOptions(cc ?? clientCreds, SERVER_ID);
    const opts = {
      ...base,
      secureContext: tls.createSecureContext({
        minVersion: 'TLSv1.3', ca: ca.rootCertPem, ...(cc ? { cert: cc.certChainPem, key: cc.keyPem } : {}),
      }),
    };
    const srv = await startServer(serverCreds);
    try {
      const r = await dial({ host: '127.0.0.1', port: srv.port, ...opts });
      // TLS 1.3: the client may finish its side before the server's verdict, so it sees an alert,
      // a reset or a plain close; what matters is that the server never accepts and no data flows.
      assert.equal(r.data, '', 'client must not get application data');
      assert.equal(srv.accepted.length, 0, 'server must not accept the connection');
    } finally {
      await srv.close();
    }
    // Node destroys a rejected server socket without saying why; show the reason is the expected
    // one with a server that reports instead of rejecting (same roots, same client).
    const diag = tls.createServer({ ...hboneServerOptions(serverCreds), rejectUnauthorized: false }, (s) => {
      s.end(s.authorized ? 'authorized' : `unauthorized ${s.authorizationError}`);
    });
    await new Promise<void>((r) => diag.listen(0, '127.0.0.1', r));
    try {
      const r = await dial({ host: '127.0.0.1', port: (diag.address() as AddressInfo).port, ...opts });
      assert.match(r.data, new RegExp(`^unauthorized .*(${c.reason.source})`));
    } finally {
      await new Promise<void>((r) => diag.close(() => r()));
    }
  });
}

test('cipher suites and curves are restricted on both sides; client contexts are cached', async () => {
  assert.equal(hboneClientOptions(clientCreds, SERVER_ID).secureContext, hboneClientOptions(clientCreds, 'spiffe://x/ns/a/sa/b').secureContext);
  // Our server refuses a client that only offers CCM or only P-384.
  const srv = await startServer(serverCreds);
  try {
    for (const extra of [{ ciphers: 'TLS_AES_128_CCM_SHA256' }, { ecdhCurve: 'P-384' }]) {
      const ctx = tls.createSecureContext({ minVersion: 'TLSv1.3', ca: clientCreds.rootsPem, cert: clientCreds.certChainPem, key: clientCreds.keyPem, ...extra });
      const r = await dial({ host: '127.0.0.1', port: srv.port, ...hboneClientOptions(clientCreds, SERVER_ID), secureContext: ctx });
      assert.match(r.error?.message ?? '', /handshake failure/, JSON.stringify(extra));
    }
    assert.equal(srv.accepted.length, 0);
  } finally {
    await srv.close();
  }
  // Our client refuses a server that only does CCM.
  const ccm = tls.createServer({ ...hboneServerOptions(serverCreds), ciphers: 'TLS_AES_128_CCM_SHA256' }, (s) => s.end('x'));
  await new Promise<void>((r) => ccm.listen(0, '127.0.0.1', r));
  try {
    const r = await dial({ host: '127.0.0.1', port: (ccm.address() as AddressInfo).port, ...hboneClientOptions(clientCreds, SERVER_ID) });
    assert.ok(r.error, 'must fail');
    assert.equal(r.data, '');
  } finally {
    await new Promise<void>((r) => ccm.close(() => r()));
  }
});

test('parseSpiffeId and SAN splitting', () => {
  assert.deepEqual(parseSpiffeId('spiffe://cluster.local/ns/a-b/sa/c.d'), { trustDomain: 'cluster.local', namespace: 'a-b', serviceAccount: 'c.d' });
  for (const bad of ['spiffe://cluster.local/ns/a/sa/', 'spiffe://Cluster/ns/a/sa/b', 'spiffe://td/ns/a/sa/b/c', 'spiffe://td/ns/-a/sa/b', 'http://td/ns/a/sa/b', '']) {
    assert.equal(parseSpiffeId(bad), undefined, bad);
  }
  assert.deepEqual(splitAltNames('URI:spiffe://td/ns/a/sa/b, DNS:x.y, URI:"a, b", IP Address:1.2.3.4'),
    ['URI:spiffe://td/ns/a/sa/b', 'DNS:x.y', 'URI:a, b', 'IP Address:1.2.3.4']);
});
