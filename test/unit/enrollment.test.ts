/** Runtime enrollment decisions: the hand-off's `enrolled` flag and the agent's reconciler. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Workload } from '../../src/api/mesh.ts';
import { parsePodHandoffRequest } from '../../src/api/pod-handoff.ts';
import { StateStore } from '../../src/ztunnel/state/store.ts';
import { EnrollmentReconciler, wantEnrolled, type LocalPodView } from '../../src/ztunnel/enrollment.ts';

function wl(uid: string, protocol: 'HBONE' | 'TCP'): Workload {
  return {
    uid, name: uid, namespace: 'apps', addresses: [`10.0.0.${uid.length}`], node: 'n1', serviceAccount: 'default',
    trustDomain: 'cluster.local', protocol, ready: true, labels: {}, canonicalName: uid, canonicalRevision: 'latest', services: {},
  };
}

const add = { op: 'add', uid: 'u1', name: 'p', namespace: 'apps', serviceAccount: 'sa', ips: ['10.0.0.1'], netnsPath: '/run/netns/x' };

describe('runtime enrollment', () => {
  it('hand-off: enrolled is optional (absent = enrolled), must be a boolean', () => {
    assert.equal(parsePodHandoffRequest(JSON.stringify(add)).op, 'add');
    assert.equal((parsePodHandoffRequest(JSON.stringify(add)) as { enrolled?: boolean }).enrolled, undefined);
    assert.equal((parsePodHandoffRequest(JSON.stringify({ ...add, enrolled: false })) as { enrolled?: boolean }).enrolled, false);
    assert.throws(() => parsePodHandoffRequest(JSON.stringify({ ...add, enrolled: 'yes' })), (e: Error & { code?: string }) =>
      e.code === 'HANDOFF_BAD_REQUEST' && /"enrolled"/.test(e.message));
  });

  it('wantEnrolled follows the workload record; no record keeps the current state', () => {
    assert.equal(wantEnrolled(wl('a', 'HBONE')), true);
    assert.equal(wantEnrolled(wl('a', 'TCP')), false);
    assert.equal(wantEnrolled(undefined), undefined);
  });

  it('the reconciler enrolls and releases on state changes, retries failures, leaves unknown pods alone', async () => {
    const state = new StateStore();
    const pods: LocalPodView[] = [
      { uid: 'aa', namespace: 'apps', name: 'aa', enrolled: false },
      { uid: 'bbb', namespace: 'apps', name: 'bbb', enrolled: true },
      { uid: 'cccc', namespace: 'apps', name: 'cccc', enrolled: true },
    ];
    const calls: string[] = [];
    let failOnce = true;
    const r = new EnrollmentReconciler({
      state, pods: () => pods, retryMinMs: 20,
      enroll: async (uid) => {
        calls.push(`enroll ${uid}`);
        if (failOnce) { failOnce = false; throw new Error('iptables busy'); }
        pods.find((p) => p.uid === uid)!.enrolled = true;
      },
      release: async (uid) => { calls.push(`release ${uid}`); pods.find((p) => p.uid === uid)!.enrolled = false; },
    });
    r.start();
    await r.idle();
    assert.deepEqual(calls, [], 'no records: nothing to do');
    state.apply({ workloads: { upsert: [wl('aa', 'HBONE'), wl('bbb', 'TCP')] } });
    await r.idle();
    await new Promise((res) => setTimeout(res, 100));
    await r.idle();
    assert.deepEqual(calls.sort(), ['enroll aa', 'enroll aa', 'release bbb']);
    assert.deepEqual(pods.map((p) => p.enrolled), [true, false, true], 'cccc has no record: kept');
    await r.stop();
  });
});
