/**
 * The controller's Kubernetes source against the real control plane (scripts/build-kube.sh): the
 * snapshots it emits, mesh CRDs that are installed late, 410 Gone relists, reconnecting after the
 * API server restarts, leader election between replicas, and the status conditions and Events it
 * writes. The source talks to the API server through a TCP relay owned by the test, so the API
 * server can restart on a new port while the source keeps one address.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { parseAllDocuments } from 'yaml';
import type { KubeObject } from '../../src/api/k8s.ts';
import { Controller } from '../../src/controller/controller.ts';
import { KubeClient, loadKubeConfig } from '../../src/controller/sources/kube/client.ts';
import { KubeSource, type KubeSourceOptions } from '../../src/controller/sources/kube/kube-source.ts';
import type { Condition } from '../../src/controller/sources/kube/status.ts';
import type { ClusterSnapshot } from '../../src/controller/sources/source.ts';
import { startKubeControlPlane, stopKubeControlPlane, type KubeControlPlane } from '../../src/local/kube/control-plane.ts';
import { writeKubeconfig } from '../../src/local/kube/kubeconfig.ts';
import { readPids } from '../../src/local/kube/processes.ts';
import { kubectl } from './kube-helpers.ts';

const PREFIX = 'ambit-kube-source-test-';
const CRD_DIR = join(import.meta.dirname, '..', '..', 'controller', 'crds');

/** A TCP relay to the API server's current port; `drop()` cuts every connection. */
class Relay {
  target = 0;
  port = 0;
  #server = net.createServer((c) => {
    const u = net.connect(this.target, '127.0.0.1');
    this.#conns.add(c).add(u);
    const close = () => { c.destroy(); u.destroy(); this.#conns.delete(c); this.#conns.delete(u); };
    c.on('error', close).on('close', close);
    u.on('error', close).on('close', close);
    c.pipe(u).pipe(c);
  });
  #conns = new Set<net.Socket>();
  async listen(): Promise<void> {
    await new Promise<void>((res) => this.#server.listen(0, '127.0.0.1', res));
    this.port = (this.#server.address() as net.AddressInfo).port;
  }
  drop(): void { for (const c of this.#conns) c.destroy(); }
  async close(): Promise<void> {
    this.drop();
    await new Promise<void>((res) => this.#server.close(() => res()));
  }
}

async function until<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function varint(n: number): number[] {
  const out: number[] = [];
  for (; n > 127; n = Math.floor(n / 128)) out.push((n % 128) | 128);
  return [...out, n];
}

/**
 * Compacts etcd's history up to `revision` (etcdserverpb.KV/Compact, physical), as the API server
 * does every few minutes: older resourceVersions are then answered with 410 Gone.
 */
async function compactEtcd(cp: KubeControlPlane, revision: number): Promise<void> {
  const pid = readPids(cp.dir).find((p) => p.name === 'etcd')!.pid;
  const arg = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').find((a) => a.startsWith('--listen-client-urls='))!;
  const client = new grpc.Client(new URL(arg.split('=')[1]).host, grpc.credentials.createSsl(
    readFileSync(cp.pki.caCert), readFileSync(cp.pki.etcdClientKey), readFileSync(cp.pki.etcdClientCert)),
    { 'grpc.ssl_target_name_override': 'localhost' }); // (the certificate names localhost; an IP as TLS server name is deprecated)
  const request = Buffer.from([0x08, ...varint(revision), 0x10, 0x01]); // CompactionRequest{revision, physical: true}
  try {
    await new Promise<void>((res, rej) => client.makeUnaryRequest('/etcdserverpb.KV/Compact', (b: Buffer) => b, (b: Buffer) => b, request, (err) => (err ? rej(err) : res())));
  } finally {
    client.close();
  }
}

const find = (s: ClusterSnapshot | undefined, kind: string, ns: string | undefined, name: string): KubeObject | undefined =>
  s?.objects.find((o) => o.kind === kind && o.metadata.name === name && o.metadata.namespace === ns);

/** A watching source and the snapshots it emitted. */
interface Running { source: KubeSource; snaps: ClusterSnapshot[]; latest(): ClusterSnapshot | undefined }

describe('controller Kubernetes source', () => {
  let dir = '';
  let cp: KubeControlPlane | undefined;
  const relay = new Relay();
  let kubeconfig = '';
  let admin: KubeClient;
  const running: Running[] = [];

  async function start(opts: KubeSourceOptions = {}): Promise<Running> {
    const source = new KubeSource({ kubeconfig }, { backoffBaseMs: 100, backoffMaxMs: 1000, syncTimeoutMs: 60_000, lease: false, ...opts });
    const snaps: ClusterSnapshot[] = [];
    const r: Running = { source, snaps, latest: () => snaps.at(-1) };
    running.push(r);
    await source.start((s) => snaps.push(s));
    return r;
  }

  async function stop(r: Running): Promise<void> {
    running.splice(running.indexOf(r), 1);
    await r.source.stop();
  }

  const create = (path: string, body: object) => admin.request<KubeObject>('POST', path, body);
  const ns = (name: string, labels: Record<string, string> = {}) => create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });
  const policy = (namespace: string, name: string, spec: object) =>
    create(`/apis/security.istio.io/v1/namespaces/${namespace}/authorizationpolicies`, { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace }, spec });
  const getPolicy = (namespace: string, name: string) => admin.request<KubeObject>('GET', `/apis/security.istio.io/v1/namespaces/${namespace}/authorizationpolicies/${name}`);
  const accepted = (o: KubeObject) => ((o.status as { conditions?: Condition[] } | undefined)?.conditions ?? []).find((c) => c.type === 'Accepted');

  async function installCrds(): Promise<void> {
    const files = existsSync(CRD_DIR) ? readdirSync(CRD_DIR).filter((f) => f.startsWith('security.istio.io_')) : [];
    const crds: object[] = files.length > 0
      ? files.flatMap((f) => parseAllDocuments(readFileSync(join(CRD_DIR, f), 'utf8')).map((d) => d.toJS() as object))
      : ['AuthorizationPolicy', 'PeerAuthentication'].map(minimalCrd);
    for (const c of crds) await create('/apis/apiextensions.k8s.io/v1/customresourcedefinitions', c);
  }

  before(async () => {
    for (const e of readdirSync(tmpdir())) {
      if (!e.startsWith(PREFIX)) continue;
      await stopKubeControlPlane(join(tmpdir(), e));
      rmSync(join(tmpdir(), e), { recursive: true, force: true });
    }
    dir = mkdtempSync(join(tmpdir(), PREFIX));
    const t0 = Date.now();
    cp = await startKubeControlPlane({ dir: join(dir, 'cp') });
    console.log(`control plane up in ${Date.now() - t0} ms`);
    await relay.listen();
    relay.target = Number(new URL(cp.server).port);
    kubeconfig = join(dir, 'relay.kubeconfig');
    writeKubeconfig({ file: kubeconfig, server: `https://127.0.0.1:${relay.port}`, caFile: cp.pki.caCert, certFile: cp.pki.adminCert, keyFile: cp.pki.adminKey, user: 'admin' });
    admin = new KubeClient(loadKubeConfig({ kubeconfig: cp.kubeconfig }));
  });

  after(async () => {
    for (const r of [...running]) await stop(r).catch(() => {});
    await relay.close();
    await cp?.stop();
    await stopKubeControlPlane(join(dir, 'cp'));
    rmSync(dir, { recursive: true, force: true });
  });

  it('starts without the mesh CRDs, says so, and picks them up once installed', async () => {
    const r = await start();
    const first = r.latest()!;
    assert.ok(find(first, 'Namespace', undefined, 'default'), 'the first snapshot is complete');
    assert.ok(find(first, 'ServiceAccount', 'default', 'default'));
    assert.deepEqual(first.errors.map((e) => e.source), ['security.istio.io/v1 AuthorizationPolicy', 'security.istio.io/v1 PeerAuthentication']);
    assert.match(first.errors[0].message, /not served \(CRD not installed\?\).*retrying/);
    await installCrds();
    await until('the CRD errors to go', () => r.latest()!.errors.length === 0, 30_000);
    await ns('ks1');
    await policy('ks1', 'allow-ns', { action: 'ALLOW', rules: [{ from: [{ source: { namespaces: ['ks1'] } }] }] });
    await until('the policy in a snapshot', () => find(r.latest(), 'AuthorizationPolicy', 'ks1', 'allow-ns'));
    await stop(r);
  });

  it('snapshots follow the API; the leader writes Accepted conditions and Events; the controller enforces', async () => {
    await ns('ks2', { 'istio.io/dataplane-mode': 'ambient' });
    const r = await start({ lease: { namespace: 'ks2', leaseDurationMs: 2000, retryPeriodMs: 200 }, debounceMs: 20 });
    await until('leadership', () => r.source.isLeader);
    const t0 = Date.now();
    await create('/api/v1/namespaces/ks2/serviceaccounts', { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'app' } });
    await create('/api/v1/namespaces/ks2/pods', {
      apiVersion: 'v1', kind: 'Pod', metadata: { name: 'app-1', labels: { app: 'app' } },
      spec: { serviceAccountName: 'app', containers: [{ name: 'c', image: 'none', ports: [{ containerPort: 8080 }] }] },
    });
    await create('/api/v1/namespaces/ks2/services', {
      apiVersion: 'v1', kind: 'Service', metadata: { name: 'app' }, spec: { selector: { app: 'app' }, ports: [{ port: 80, targetPort: 8080 }] },
    });
    await until('pod, service and service account in a snapshot', () =>
      find(r.latest(), 'Pod', 'ks2', 'app-1') && find(r.latest(), 'Service', 'ks2', 'app') && find(r.latest(), 'ServiceAccount', 'ks2', 'app'));
    console.log(`three objects created to snapshot: ${Date.now() - t0} ms`);
    const svc = find(r.latest(), 'Service', 'ks2', 'app')!;
    assert.equal(svc.apiVersion, 'v1');
    assert.equal(svc.metadata.resourceVersion, undefined, 'bookkeeping is left out of snapshots');
    await until('an EndpointSlice made by the controller-manager', () =>
      r.latest()!.objects.find((o) => o.kind === 'EndpointSlice' && o.metadata.namespace === 'ks2' && o.metadata.labels?.['kubernetes.io/service-name'] === 'app'));

    await policy('ks2', 'good', { action: 'ALLOW', rules: [{ from: [{ source: { principals: ['cluster.local/ns/ks2/sa/app'] } }] }] });
    await policy('ks2', 'l7', { action: 'ALLOW', rules: [{ to: [{ operation: { methods: ['GET'] } }] }] });
    await policy('ks2', 'custom', { action: 'CUSTOM', provider: { name: 'ext-authz' }, rules: [{}] });
    const good = await until('good: Accepted', async () => accepted(await getPolicy('ks2', 'good')));
    assert.deepEqual([good.status, good.reason, good.message, good.observedGeneration], ['True', 'Accepted', 'accepted', 1]);
    assert.ok(good.lastTransitionTime);
    const l7 = await until('l7: Accepted', async () => accepted(await getPolicy('ks2', 'l7')));
    assert.deepEqual([l7.status, l7.reason], ['True', 'UnsupportedValue']);
    assert.match(l7.message, /methods/);
    const custom = await until('custom: refused', async () => accepted(await getPolicy('ks2', 'custom')));
    assert.deepEqual([custom.status, custom.reason], ['False', 'Invalid']);
    assert.match(custom.message, /^spec\.action: CUSTOM .* not supported/);
    const events = await until('a Refused event', async () => {
      const list = await admin.request<{ items: { reason: string; type: string; message: string; involvedObject: { kind: string; name: string } }[] }>('GET', '/api/v1/namespaces/ks2/events');
      return list.items.find((e) => e.reason === 'Refused' && e.involvedObject.name === 'custom');
    });
    assert.equal(events.type, 'Warning');
    assert.equal(events.involvedObject.kind, 'AuthorizationPolicy');
    assert.match(events.message, /spec\.action/);

    // Our status writes come back over the watch, but make no snapshot and no further writes.
    await new Promise((res) => setTimeout(res, 1000));
    const [rev, writes] = [r.latest()!.revision, r.source.status.writes];
    await new Promise((res) => setTimeout(res, 1000));
    assert.equal(r.latest()!.revision, rev);
    assert.equal(r.source.status.writes, writes);

    // Fixing the refused policy flips its condition (a new transition time) and records no event.
    const fixed = await admin.request<KubeObject>('PATCH', '/apis/security.istio.io/v1/namespaces/ks2/authorizationpolicies/custom',
      { spec: { action: 'DENY', provider: null, rules: [{ from: [{ source: { namespaces: ['other'] } }] }] } }, { contentType: 'application/merge-patch+json' });
    const flipped = await until('custom: accepted after the fix', async () => {
      const c = accepted(await getPolicy('ks2', 'custom'));
      return c?.status === 'True' ? c : undefined;
    });
    assert.equal(flipped.observedGeneration, fixed.metadata.generation);
    assert.equal(r.source.status.events, 1);

    await stop(r);

    // The whole controller on a Kubernetes source: the policies it enforces.
    const source = new KubeSource({ kubeconfig }, { lease: false });
    const c = await Controller.start({ manifests: '', caDir: join(dir, 'ca'), host: '127.0.0.1', port: 0, source });
    try {
      const names = c.config!.authorizations.filter((a) => a.namespace === 'ks2').map((a) => a.name).sort();
      assert.deepEqual(names, ['custom', 'good', 'l7']);
      assert.equal(c.config!.workloads.filter((w) => w.namespace === 'ks2').length, 0, 'a pod without an IP is no workload yet');
    } finally {
      await c.stop();
    }
  });

  it('reconnects after dropped connections and an API server restart, keeping its last snapshot meanwhile', async () => {
    const r = await start();
    const before = r.latest()!;
    relay.drop();
    await ns('ks4a');
    await until('ks4a after the connections dropped', () => find(r.latest(), 'Namespace', undefined, 'ks4a'), 20_000);
    // (the controller-manager adds a ServiceAccount to it: let that settle before counting snapshots)
    await until('ks4a/default', () => find(r.latest(), 'ServiceAccount', 'ks4a', 'default'), 20_000);
    await new Promise((res) => setTimeout(res, 300));

    const count = r.snaps.length;
    const t0 = Date.now();
    await cp!.stop();
    await new Promise((res) => setTimeout(res, 2000));
    assert.equal(r.snaps.length, count, 'no snapshot while the API server is away');
    cp = await startKubeControlPlane({ dir: join(dir, 'cp') });
    relay.target = Number(new URL(cp.server).port);
    admin = new KubeClient(loadKubeConfig({ kubeconfig: cp.kubeconfig }));
    console.log(`control plane restarted in ${Date.now() - t0} ms`);
    await ns('ks4b');
    const t1 = Date.now();
    await until('ks4b after the restart', () => find(r.latest(), 'Namespace', undefined, 'ks4b'), 30_000);
    console.log(`first change seen ${Date.now() - t1} ms after the restarted API server answered`);
    assert.ok(r.source.reflectors.some((x) => x.stats.restarts > 0));
    assert.ok(r.latest()!.objects.length >= before.objects.length);
    await stop(r);
  });

  it('relists on 410 Gone, dropping what was deleted while it was away', async () => {
    const r = await start();
    const sa = r.source.reflectors.find((x) => x.resource.kind === 'ServiceAccount')!;
    const lists = sa.stats.lists;
    await ns('ks3');
    await create('/api/v1/namespaces/ks3/serviceaccounts', { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'gone' } });
    await until('ks3/gone', () => find(r.latest(), 'ServiceAccount', 'ks3', 'gone'));
    // A long disconnect: the API server is out of reach while objects change and history is
    // compacted. (It restarted in the previous test, so its watch cache does not reach back to
    // resourceVersion 1 either.)
    const target = relay.target;
    relay.target = 1; // nothing listens there
    relay.drop();
    await admin.request('DELETE', '/api/v1/namespaces/ks3/serviceaccounts/gone');
    await create('/api/v1/namespaces/ks3/serviceaccounts', { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'new' } });
    const list = await admin.request<{ metadata: { resourceVersion: string } }>('GET', '/api/v1/serviceaccounts?limit=1');
    await compactEtcd(cp!, Number(list.metadata.resourceVersion));
    // The API server's view of the compaction can lag for a moment: wait until it answers 410 itself.
    await until('the API server to answer 410 for resourceVersion 1', () =>
      kubectl(cp!, ['get', '--raw', '/api/v1/serviceaccounts?watch=1&resourceVersion=1&timeoutSeconds=1']).stdout.includes('"code":410') || undefined, 20_000);
    r.source.resumeFrom('ServiceAccount', '1'); // the stale resourceVersion it comes back with
    await new Promise((res) => setTimeout(res, 1500)); // a few failed reconnects
    assert.ok(find(r.latest(), 'ServiceAccount', 'ks3', 'gone'), 'the last snapshot stays while away');
    relay.target = target;
    await until('a 410 and a relist', () => sa.stats.expired > 0 && sa.stats.lists > lists, 20_000);
    await until('the relisted state', () => !find(r.latest(), 'ServiceAccount', 'ks3', 'gone') && find(r.latest(), 'ServiceAccount', 'ks3', 'new'), 10_000);
    await stop(r);
  });

  it('elects one leader among replicas; only it writes; fail-over on release and on expiry', async () => {
    await ns('ks5');
    const lease = { namespace: 'ks5', leaseDurationMs: 2000, retryPeriodMs: 200 };
    const a = await start({ lease });
    const b = await start({ lease });
    const leader = await until('one leader', () => {
      const l = [a, b].filter((x) => x.source.isLeader);
      return l.length === 1 ? l[0] : undefined;
    });
    const follower = leader === a ? b : a;
    await policy('ks5', 'custom', { action: 'CUSTOM', provider: { name: 'x' } });
    await until('the leader wrote status', async () => accepted(await getPolicy('ks5', 'custom')));
    assert.equal(follower.source.status.writes, 0, 'the follower writes nothing');
    await until('the follower sees the policy too', () => find(follower.latest(), 'AuthorizationPolicy', 'ks5', 'custom'));

    // A leader that stops releases the lease: the other takes over at its next retry.
    let t0 = Date.now();
    await stop(leader);
    await until('fail-over after release', () => follower.source.isLeader, 5000);
    console.log(`fail-over after release: ${Date.now() - t0} ms`);

    // A leader that vanishes without releasing: the other waits out the lease duration.
    const c = await start({ lease });
    await new Promise((res) => setTimeout(res, 500));
    assert.equal(c.source.isLeader, false);
    t0 = Date.now();
    await follower.source.elector!.stop({ release: false });
    await until('fail-over after expiry', () => c.source.isLeader, 10_000);
    const took = Date.now() - t0;
    console.log(`fail-over after expiry: ${took} ms`);
    assert.ok(took >= 1500, `took over after ${took} ms, before the 2000 ms lease could expire`);
    const l = await admin.request<{ spec: { holderIdentity: string; leaseTransitions: number } }>('GET', '/apis/coordination.k8s.io/v1/namespaces/ks5/leases/ambit-controller');
    assert.equal(l.spec.holderIdentity, c.source.elector!.identity);
    assert.ok(l.spec.leaseTransitions >= 2);
    await stop(follower);
    await stop(c);
    // Released on stop: nobody holds it.
    const after = await admin.request<{ spec: { holderIdentity?: string } }>('GET', '/apis/coordination.k8s.io/v1/namespaces/ks5/leases/ambit-controller');
    assert.equal(after.spec.holderIdentity ?? '', '');
  });
});

/** Used only when K2's CRDs (controller/crds/) are not there: accepts anything, has a status subresource. */
function minimalCrd(kind: string): object {
  const plural = `${kind.toLowerCase()}s`.replace(/ys$/, 'ies');
  return {
    apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition',
    metadata: { name: `${plural}.security.istio.io` },
    spec: {
      group: 'security.istio.io', scope: 'Namespaced',
      names: { kind, plural, singular: kind.toLowerCase(), listKind: `${kind}List` },
      versions: [{
        name: 'v1', served: true, storage: true, subresources: { status: {} },
        schema: { openAPIV3Schema: { type: 'object', properties: { spec: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true }, status: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } } } },
      }],
    },
  };
}
