/**
 * Open inbound connections are decided again when a LOCAL workload's labels (or namespace /
 * enrollment) change, since a selector policy may start or stop applying; unrelated state changes
 * (other workloads, readiness, identical re-sends) trigger no re-check. Real StateStore and
 * ConnectionTracker, the production Authorizer.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Workload } from '../../src/api/mesh.ts';
import type { AuthorizationRecord } from '../../src/api/policy.ts';
import { StateStore } from '../../src/ztunnel/state/store.ts';
import { ConnectionTracker, type ClosedConnection } from '../../src/ztunnel/proxy/connections.ts';
import type { AuthzContext } from '../../src/ztunnel/proxy/context.ts';
import { stateAuthorizer } from '../../src/ztunnel/authz/authorizer.ts';
import { PolicyRechecker, rememberAuthz } from '../../src/ztunnel/authz/recheck.ts';

const W: Workload = {
  uid: 'srv', name: 'srv', namespace: 'foo', addresses: ['10.0.0.5'], node: 'n', serviceAccount: 'srv', trustDomain: 'cluster.local',
  protocol: 'HBONE', ready: true, labels: { app: 'srv' }, canonicalName: 'srv', canonicalRevision: 'v1', services: {},
};
const OTHER: Workload = { ...W, uid: 'other', name: 'other', addresses: ['10.0.0.9'], labels: { app: 'other' } };
const pod = { uid: 'srv', name: 'srv', namespace: 'foo', serviceAccount: 'srv', ips: ['10.0.0.5'], netnsFd: -1 };
const ctx: AuthzContext = {
  pod, workload: W, srcIdentity: 'spiffe://cluster.local/ns/bar/sa/client', srcIp: '10.0.1.2', dstIp: '10.0.0.5', dstPort: 8080, transport: 'hbone',
};
/** allow-nothing for workloads labelled tier=db in foo */
const lockDb: AuthorizationRecord = { namespace: 'foo', name: 'lock-db', scope: 'WORKLOAD', selector: { tier: 'db' }, action: 'ALLOW', rules: [], warnings: [] };
const tick = () => new Promise((r) => setImmediate(r));

describe('PolicyRechecker and local workload labels', () => {
  it('a label change of a served workload re-checks its open connections; unrelated changes do not', async () => {
    const state = new StateStore();
    state.apply({ workloads: { upsert: [W, OTHER] }, authorizations: { upsert: [lockDb] } });
    const inner = stateAuthorizer(state);
    let decisions = 0;
    const authorize = (c: AuthzContext) => { decisions++; return inner(c); };
    const tracker = new ConnectionTracker({ accessLog: false });
    const closed: ClosedConnection[] = [];
    tracker.on('close', (c) => closed.push(c));
    const open = () => {
      const rec = tracker.open({ direction: 'inbound', podUid: 'srv', src: '10.0.1.2:1', dst: '10.0.0.5:8080', protocol: 'HBONE', srcIdentity: ctx.srcIdentity });
      rememberAuthz(rec, ctx);
      return rec;
    };
    const first = open();
    assert.equal(authorize(ctx).allow, true, 'srv is not tier=db: the selector policy does not apply');
    decisions = 0;
    const rechecker = new PolicyRechecker({ state, authorize, records: () => tracker.recordsOf('srv'), localUids: () => ['srv'] });
    rechecker.start();

    // Unrelated: another node's workload relabelled, our workload's readiness, an identical re-send.
    state.apply({ workloads: { upsert: [{ ...OTHER, labels: { app: 'other', tier: 'db' } }] } });
    state.apply({ workloads: { upsert: [{ ...W, ready: false }] } });
    state.apply({ workloads: { upsert: [{ ...W, ready: false, labels: { app: 'srv' } }] } });
    await tick();
    assert.equal(decisions, 0, 'no re-check for changes that cannot change a decision');
    assert.equal(first.closed, false);

    // Our workload gains tier=db: lock-db now applies and denies the open connection.
    const t0 = performance.now();
    state.apply({ workloads: { upsert: [{ ...W, labels: { app: 'srv', tier: 'db' } }] } });
    await tick();
    assert.equal(first.closed, true);
    assert.ok(performance.now() - t0 < 1000);
    assert.equal(closed.length, 1);
    assert.equal(closed[0].policy, 'foo/lock-db');
    assert.match(closed[0].error!, /^ZT_POLICY_CHANGED: .*no ALLOW policy matched \(policy foo\/lock-db applies\)/);

    // The label goes away again: a new connection is allowed and stays open through the re-check.
    state.apply({ workloads: { upsert: [{ ...W, labels: { app: 'srv' } }] } });
    await tick();
    const second = open();
    decisions = 0;
    // Enrollment: the namespace leaves the mesh (protocol TCP) -> re-checked (still allowed here).
    state.apply({ workloads: { upsert: [{ ...W, protocol: 'TCP' }] } });
    await tick();
    assert.equal(decisions, 1, 'one decision for the one open connection');
    assert.equal(second.closed, false);
    rechecker.stop();
  });

  it('without localUids only policy changes count (as before)', async () => {
    const state = new StateStore();
    state.apply({ workloads: { upsert: [W] }, authorizations: { upsert: [lockDb] } });
    let decisions = 0;
    const inner = stateAuthorizer(state);
    const tracker = new ConnectionTracker({ accessLog: false });
    rememberAuthz(tracker.open({ direction: 'inbound', podUid: 'srv', src: '10.0.1.2:1', dst: '10.0.0.5:8080', protocol: 'HBONE' }), ctx);
    const rechecker = new PolicyRechecker({ state, authorize: (c) => { decisions++; return inner(c); }, records: () => tracker.recordsOf('srv') });
    rechecker.start();
    state.apply({ workloads: { upsert: [{ ...W, labels: { app: 'srv', tier: 'db' } }] } });
    await tick();
    assert.equal(decisions, 0);
    rechecker.stop();
  });
});
