/**
 * The state-backed Authorizer (STRICT refuses plaintext, policies from the store, index follows
 * policy changes) and re-checks of open connections after a policy change, with a real StateStore
 * and ConnectionTracker.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Workload } from '../../src/api/mesh.ts';
import { emptyMatch, type AuthorizationRecord, type PeerAuthenticationRecord } from '../../src/api/policy.ts';
import { StateStore } from '../../src/ztunnel/state/store.ts';
import { ConnectionTracker, type ClosedConnection } from '../../src/ztunnel/proxy/connections.ts';
import type { AuthzContext } from '../../src/ztunnel/proxy/context.ts';
import { stateAuthorizer } from '../../src/ztunnel/authz/authorizer.ts';
import { PolicyRechecker, rememberAuthz } from '../../src/ztunnel/authz/recheck.ts';

const W: Workload = {
  uid: 'srv', name: 'srv', namespace: 'foo', addresses: ['10.0.0.5'], node: 'n', serviceAccount: 'srv', trustDomain: 'cluster.local',
  protocol: 'HBONE', ready: true, labels: { app: 'srv' }, canonicalName: 'srv', canonicalRevision: 'v1', services: {},
};
const pod = { uid: 'srv', name: 'srv', namespace: 'foo', serviceAccount: 'srv', ips: ['10.0.0.5'], netnsFd: -1 };
const ctx = (o: Partial<AuthzContext> = {}): AuthzContext => ({
  pod, workload: W, srcIdentity: 'spiffe://cluster.local/ns/bar/sa/client', srcIp: '10.0.1.2', dstIp: '10.0.0.5', dstPort: 8080, transport: 'hbone', ...o,
});
const plain = (o: Partial<AuthzContext> = {}): AuthzContext => ctx({ srcIdentity: undefined, transport: 'plaintext', ...o });
const allowNothing: AuthorizationRecord = { namespace: 'foo', name: 'allow-nothing', scope: 'NAMESPACE', action: 'ALLOW', rules: [], warnings: [] };
const denyBar: AuthorizationRecord = {
  namespace: 'foo', name: 'deny-bar', scope: 'NAMESPACE', action: 'DENY', warnings: [],
  rules: [{ clauses: [[{ ...emptyMatch(), namespaces: ['bar'] }]] }],
};
const strict: PeerAuthenticationRecord = { namespace: 'foo', name: 'strict', scope: 'NAMESPACE', mode: 'STRICT', portLevel: {} };

describe('stateAuthorizer', () => {
  it('follows the store: policies per namespace, removal, STRICT for plaintext only', () => {
    const state = new StateStore();
    state.apply({ workloads: { upsert: [W] } });
    const authorize = stateAuthorizer(state);
    assert.equal(authorize(ctx()).allow, true);
    state.apply({ authorizations: { upsert: [denyBar] } });
    const d = authorize(ctx());
    assert.equal(d.allow, false);
    assert.equal(d.policy, 'foo/deny-bar');
    assert.equal(authorize(plain()).allow, true, 'plaintext has no namespace');
    state.apply({ peerAuthentications: { upsert: [strict] } });
    const s = authorize(plain());
    assert.equal(s.allow, false);
    assert.equal(s.policy, 'foo/strict');
    assert.match(s.reason!, /plaintext refused: PeerAuthentication foo\/strict requires mTLS \(STRICT\) for port 8080/);
    assert.equal(authorize(ctx({ srcIdentity: 'spiffe://cluster.local/ns/baz/sa/x' })).allow, true, 'STRICT does not touch mTLS');
    state.apply({ authorizations: { remove: ['foo/deny-bar'] }, peerAuthentications: { remove: ['foo/strict'] } });
    assert.equal(authorize(ctx()).allow, true);
    assert.equal(authorize(plain()).allow, true);
  });

  it('uses the workload as the store has it now (labels), falling back to the hand-off facts', () => {
    const state = new StateStore();
    const authorize = stateAuthorizer(state);
    const sel: AuthorizationRecord = { ...allowNothing, name: 'sel', scope: 'WORKLOAD', selector: { app: 'srv', tier: 'db' } };
    state.apply({ authorizations: { upsert: [sel] } });
    assert.equal(authorize(ctx({ workload: undefined })).allow, true, 'no labels known: selector does not match');
    state.apply({ workloads: { upsert: [{ ...W, labels: { app: 'srv', tier: 'db' } }] } });
    assert.equal(authorize(ctx()).allow, false, 'the store labels count, not the stale ones in the context');
  });

  it('mesh policies apply to every namespace through the index', () => {
    const state = new StateStore();
    state.apply({ workloads: { upsert: [W] } });
    const authorize = stateAuthorizer(state);
    const other: AuthorizationRecord = { ...allowNothing, namespace: 'zzz' };
    state.apply({ authorizations: { upsert: [other] } });
    assert.equal(authorize(ctx()).allow, true);
    state.apply({ authorizations: { upsert: [{ ...denyBar, namespace: 'istio-system', scope: 'MESH' }] } });
    assert.equal(authorize(ctx()).policy, 'istio-system/deny-bar');
  });
});

describe('PolicyRechecker', () => {
  it('closes open inbound connections a policy change denies, with the reason, and leaves the rest', async () => {
    const state = new StateStore();
    state.apply({ workloads: { upsert: [W] } });
    const authorize = stateAuthorizer(state);
    const tracker = new ConnectionTracker({ accessLog: false });
    const closed: ClosedConnection[] = [];
    tracker.on('close', (c) => closed.push(c));
    const open = (c: AuthzContext) => {
      const rec = tracker.open({ direction: 'inbound', podUid: 'srv', src: `${c.srcIp}:1`, dst: '10.0.0.5:8080', protocol: c.transport === 'hbone' ? 'HBONE' : 'TCP', srcIdentity: c.srcIdentity });
      rememberAuthz(rec, c);
      let destroyed = false;
      rec.onDestroy(() => { destroyed = true; });
      return { rec, destroyed: () => destroyed };
    };
    const fromBar = open(ctx());
    const fromBaz = open(ctx({ srcIdentity: 'spiffe://cluster.local/ns/baz/sa/x', srcIp: '10.0.1.3' }));
    const plaintext = open(plain({ srcIp: '10.0.1.4' }));
    const outbound = tracker.open({ direction: 'outbound', podUid: 'srv', src: 'a', dst: 'b', protocol: 'TCP' });
    const rechecker = new PolicyRechecker({ state, authorize, records: () => tracker.recordsOf('srv') });
    rechecker.start();
    state.apply({ workloads: { upsert: [{ ...W, ready: false }] } }); // not a policy change
    await new Promise((r) => setImmediate(r));
    assert.equal(closed.length, 0);

    state.apply({ authorizations: { upsert: [denyBar] } });
    await new Promise((r) => setImmediate(r));
    assert.equal(closed.length, 1);
    assert.equal(fromBar.rec.closed, true);
    assert.equal(fromBar.destroyed(), true);
    assert.equal(closed[0].policy, 'foo/deny-bar');
    assert.match(closed[0].error!, /^ZT_POLICY_CHANGED: closed after a policy change: denied by DENY policy foo\/deny-bar/);
    assert.equal(fromBaz.rec.closed, false);

    state.apply({ peerAuthentications: { upsert: [strict] } });
    await new Promise((r) => setImmediate(r));
    assert.equal(plaintext.rec.closed, true);
    assert.match(closed[1].error!, /PeerAuthentication foo\/strict/);
    assert.equal(fromBaz.rec.closed, false);
    assert.equal(outbound.closed, false);

    rechecker.stop();
    state.apply({ authorizations: { upsert: [allowNothing] } });
    await new Promise((r) => setImmediate(r));
    assert.equal(fromBaz.rec.closed, false, 'stopped');
    assert.equal(rechecker.recheck(), 1);
    assert.match(closed[2].error!, /no ALLOW policy matched \(policy foo\/allow-nothing applies\)/);
  });
});

describe('connectToApp', () => {
  it('a denial closes the record with the policy and reason; an authorizer that throws fails closed', async () => {
    const { connectToApp } = await import('../../src/ztunnel/proxy/app-connect.ts');
    const state = new StateStore();
    state.apply({ workloads: { upsert: [W] }, authorizations: { upsert: [allowNothing] } });
    const tracker = new ConnectionTracker({ accessLog: false });
    const closed: ClosedConnection[] = [];
    tracker.on('close', (c) => closed.push(c));
    let connects = 0;
    const base = { pod, state, connections: tracker, trustDomain: 'cluster.local', sockets: { connect: async () => { connects++; throw new Error('not reached'); } } };
    const refused: number[] = [];
    const rec = tracker.open({ direction: 'inbound', podUid: 'srv', src: '10.0.1.2:1', dst: '10.0.0.5:8080', protocol: 'HBONE' });
    const ctxDeny = { ...base, authorize: stateAuthorizer(state) } as unknown as Parameters<typeof connectToApp>[0];
    assert.equal(await connectToApp(ctxDeny, rec, ctx(), { address: '10.0.0.5', port: 8080 }, (s) => refused.push(s)), undefined);
    assert.deepEqual(refused, [401]);
    assert.equal(closed[0].error, 'ZT_DENIED: no ALLOW policy matched (policy foo/allow-nothing applies)');
    assert.equal(closed[0].policy, 'foo/allow-nothing');
    const rec2 = tracker.open({ direction: 'inbound', podUid: 'srv', src: '10.0.1.2:2', dst: '10.0.0.5:8080', protocol: 'HBONE' });
    const ctxThrow = { ...base, authorize: () => { throw new Error('boom'); } } as unknown as Parameters<typeof connectToApp>[0];
    assert.equal(await connectToApp(ctxThrow, rec2, ctx(), { address: '10.0.0.5', port: 8080 }, (s) => refused.push(s)), undefined);
    assert.match(closed[1].error!, /^ZT_DENIED: authorization failed: boom/);
    assert.equal(connects, 0, 'no app connection for a denied attempt');
  });
});
