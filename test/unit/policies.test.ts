import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { KubeObject, Pod } from '../../src/api/k8s.ts';
import { emptyMatch, type AuthzMatch } from '../../src/api/policy.ts';
import { LastGoodPolicies } from '../../src/controller/translate/last-good.ts';
import { translatePolicies, translatePolicyObject } from '../../src/controller/translate/policies.ts';
import { translate, workloadName } from '../../src/controller/translate/translate.ts';
import {
  authorizationFromPb, authorizationToPb, controlPlaneService, peerAuthenticationFromPb, peerAuthenticationToPb,
  workloadFromPb, workloadToPb, type DeltaResponse,
} from '../../src/controller/push/wire.ts';
import { authorizationProblem, peerAuthenticationProblem } from '../../src/ztunnel/state/validate.ts';
import { validatePolicy } from '../../src/local/objects.ts';
import { isAmbitError } from '../../src/shared/errors.ts';

function ap(name: string, spec: unknown, namespace = 'demo', apiVersion = 'security.istio.io/v1'): KubeObject {
  return { apiVersion, kind: 'AuthorizationPolicy', metadata: { name, namespace }, spec };
}
function pa(name: string, spec: unknown, namespace = 'demo', creationTimestamp?: string): KubeObject {
  return { apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name, namespace, ...(creationTimestamp ? { creationTimestamp } : {}) }, spec };
}
function m(fields: Partial<AuthzMatch>): AuthzMatch {
  return { ...emptyMatch(), ...fields };
}
/** The one record of a single valid object, checked against the agent's own validation too. */
function one(o: KubeObject, opts = {}) {
  const r = translatePolicies([o], opts);
  assert.deepEqual(r.problems, [], 'no problems');
  const rec = r.authorizations[0] ?? r.peerAuthentications[0];
  assert.ok(rec, 'a record');
  const problem = 'action' in rec ? authorizationProblem(rec) : peerAuthenticationProblem(rec);
  assert.equal(problem, undefined, 'the agent accepts the record');
  return { ...r, rec };
}
function problemOf(o: KubeObject): { field: string; message: string } {
  const r = translatePolicies([o]);
  assert.equal(r.authorizations.length + r.peerAuthentications.length, 0, 'no record for an invalid object');
  assert.equal(r.problems.length, 1, JSON.stringify(r.problems));
  assert.equal(r.problems[0].object, `${o.kind} ${o.metadata.namespace}/${o.metadata.name}`);
  return r.problems[0];
}

// ---------------------------------------------------------------- Istio's L4 examples

test('allow-nothing: spec {} is an ALLOW with no rules for the namespace', () => {
  const { rec, warnings } = one(ap('allow-nothing', {}));
  assert.deepEqual(rec, { name: 'allow-nothing', namespace: 'demo', scope: 'NAMESPACE', action: 'ALLOW', rules: [], warnings: [] });
  assert.deepEqual(warnings, []);
  // No spec at all means the same.
  assert.deepEqual(one({ ...ap('allow-nothing', undefined) }).rec.rules, []);
});

test('deny from a namespace', () => {
  const { rec } = one(ap('deny-foo', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['foo'] } }] }] }));
  assert.equal(rec.scope, 'NAMESPACE');
  assert.equal(rec.action, 'DENY');
  assert.deepEqual(rec.rules, [{ clauses: [[m({ namespaces: ['foo'] })]] }]);
});

test('allow one principal on selected workloads', () => {
  const { rec } = one(ap('allow-sleep', {
    selector: { matchLabels: { app: 'echo' } },
    action: 'ALLOW',
    rules: [{ from: [{ source: { principals: ['cluster.local/ns/demo/sa/sleep'] } }] }],
  }));
  assert.equal(rec.scope, 'WORKLOAD');
  assert.deepEqual((rec as { selector?: unknown }).selector, { app: 'echo' });
  assert.deepEqual(rec.rules, [{ clauses: [[m({ principals: ['cluster.local/ns/demo/sa/sleep'] })]] }]);
});

test('ipBlocks and notIpBlocks: CIDRs kept, single addresses become /32 or /128', () => {
  const { rec } = one(ap('ips', { rules: [{ from: [{ source: { ipBlocks: ['10.1.0.0/16', '10.2.0.7', 'fd00::1'], notIpBlocks: ['10.1.2.0/24'] } }] }] }));
  assert.deepEqual(rec.rules, [{ clauses: [[m({ sourceIps: ['10.1.0.0/16', '10.2.0.7/32', 'fd00::1/128'], notSourceIps: ['10.1.2.0/24'] })]] }]);
});

test('ports and notPorts (strings, as Istio writes them)', () => {
  const { rec } = one(ap('ports', { rules: [{ to: [{ operation: { ports: ['8080', '9090'] } }, { operation: { notPorts: ['22'] } }] }] }));
  assert.deepEqual(rec.rules, [{ clauses: [[m({ destinationPorts: [8080, 9090] }), m({ notDestinationPorts: [22] })]] }]);
});

test('mesh-wide: a policy in the root namespace is MESH scope, with or without a selector; the root namespace is configurable', () => {
  assert.equal(one(ap('deny-all', { action: 'DENY', rules: [{}] }, 'istio-system')).rec.scope, 'MESH');
  const sel = one(ap('mesh-echo', { selector: { matchLabels: { app: 'echo' } }, rules: [{}] }, 'istio-system')).rec;
  assert.equal(sel.scope, 'MESH');
  assert.deepEqual((sel as { selector?: unknown }).selector, { app: 'echo' });
  // A rule {} matches everything: one rule, no clauses.
  assert.deepEqual(sel.rules, [{ clauses: [] }]);
  assert.equal(one(ap('x', {}, 'istio-system'), { rootNamespace: 'mesh-root' }).rec.scope, 'NAMESPACE');
  assert.equal(one(ap('x', {}, 'mesh-root'), { rootNamespace: 'mesh-root' }).rec.scope, 'MESH');
  // An empty selector selects like none.
  assert.equal(one(ap('x', { selector: { matchLabels: {} } })).rec.scope, 'NAMESPACE');
});

test('a rule: from, to and each when are clauses; not* forms; when keys', () => {
  const { rec } = one(ap('full', {
    action: 'DENY',
    rules: [{
      from: [{ source: { principals: ['cluster.local/ns/a/sa/*'], notNamespaces: ['kube-*'] } }, { source: { notPrincipals: ['*'] } }],
      to: [{ operation: { ports: ['80'] } }],
      when: [
        { key: 'source.ip', values: ['10.0.0.0/8'], notValues: ['10.9.9.9'] },
        { key: 'source.namespace', values: ['demo'] },
        { key: 'source.principal', notValues: ['*/sa/admin'] },
        { key: 'destination.ip', values: ['10.1.0.5'] },
        { key: 'destination.port', values: ['8080'], notValues: ['9090'] },
      ],
    }],
  }));
  assert.deepEqual(rec.rules[0].clauses, [
    [m({ principals: ['cluster.local/ns/a/sa/*'], notNamespaces: ['kube-*'] }), m({ notPrincipals: ['*'] })],
    [m({ destinationPorts: [80] })],
    [m({ sourceIps: ['10.0.0.0/8'], notSourceIps: ['10.9.9.9/32'] })],
    [m({ namespaces: ['demo'] })],
    [m({ notPrincipals: ['*/sa/admin'] })],
    [m({ destinationIps: ['10.1.0.5/32'] })],
    [m({ destinationPorts: [8080], notDestinationPorts: [9090] })],
  ]);
});

test('serviceAccounts become exact principals of the mesh trust domain', () => {
  const { rec } = one(ap('sa', { rules: [{ from: [{ source: { serviceAccounts: ['demo/sleep'], notServiceAccounts: ['demo/bad'] } }] }] }), { trustDomain: 'example.org' });
  assert.deepEqual(rec.rules[0].clauses, [[m({ principals: ['example.org/ns/demo/sa/sleep'], notPrincipals: ['example.org/ns/demo/sa/bad'] })]]);
});

// ---------------------------------------------------------------- L7 fields fail closed

test('ALLOW rule using L7 fields is dropped whole (matches nothing), with a warning on the record', () => {
  const { rec, warnings } = one(ap('get-only', {
    rules: [
      { from: [{ source: { namespaces: ['demo'] } }], to: [{ operation: { methods: ['GET'] } }] },
      { from: [{ source: { namespaces: ['other'] } }] },
    ],
  }));
  assert.deepEqual(rec.rules, [{ clauses: [[m({ namespaces: ['other'] })]] }], 'the L4-only rule stays');
  assert.equal(rec.warnings.length, 1);
  assert.match(rec.warnings[0], /spec\.rules\[0\]\.to\[0\]\.operation\.methods/);
  assert.match(rec.warnings[0], /allows nothing/);
  assert.deepEqual(warnings.map((w) => w.object), ['AuthorizationPolicy demo/get-only']);

  // Every rule needs L7: the policy still applies and allows nothing.
  const all = one(ap('jwt', { rules: [{ from: [{ source: { requestPrincipals: ['*'] } }] }, { when: [{ key: 'request.headers[x-user]', values: ['a'] }] }] })).rec;
  assert.deepEqual(all.rules, []);
  assert.equal(all.warnings.length, 2);
});

test('DENY rule using L7 fields keeps its L4 part (denies more), with a warning', () => {
  const { rec } = one(ap('deny-post', {
    action: 'DENY',
    rules: [{
      from: [{ source: { namespaces: ['foo'], remoteIpBlocks: ['1.2.3.4'] } }],
      to: [{ operation: { methods: ['POST'], ports: ['8080'] } }, { operation: { paths: ['/admin'] } }],
      when: [{ key: 'request.auth.claims[iss]', values: ['x'] }, { key: 'source.ip', values: ['10.0.0.0/8'] }],
    }],
  }));
  assert.deepEqual(rec.rules, [{ clauses: [
    [m({ namespaces: ['foo'] })],
    // The paths-only operation became an empty match: it holds for every connection.
    [m({ destinationPorts: [8080] }), m({})],
    [m({ sourceIps: ['10.0.0.0/8'] })],
  ] }]);
  assert.equal(rec.warnings.length, 1);
  assert.match(rec.warnings[0], /denies more than written/);
  for (const f of ['remoteIpBlocks', 'methods', 'paths', 'request.auth.claims[iss]']) assert.ok(rec.warnings[0].includes(f), f);
});

test('AUDIT: no record, a warning; CUSTOM and targetRefs refused as unsupported', () => {
  const r = translatePolicies([ap('audit', { action: 'AUDIT', rules: [{}] })]);
  assert.deepEqual([r.authorizations, r.problems], [[], []]);
  assert.match(r.warnings[0].message, /AUDIT is not enforced/);

  let p = problemOf(ap('ext', { action: 'CUSTOM', provider: { name: 'opa' }, rules: [{}] }));
  assert.equal(p.field, 'spec.action');
  assert.match(p.message, /CUSTOM .*not supported/);
  p = problemOf(ap('wp', { targetRefs: [{ kind: 'Service', group: '', name: 'echo' }] }));
  assert.equal(p.field, 'spec.targetRefs');
  assert.match(p.message, /waypoint/);
  assert.equal(problemOf(ap('wp1', { targetRef: { kind: 'Gateway', name: 'w' } })).field, 'spec.targetRef');
});

// ---------------------------------------------------------------- invalid input, field named

test('bad principals are refused with the field: spiffe:// prefix, * in the middle, empty', () => {
  const src = (principals: unknown) => ap('bad', { rules: [{ from: [{ source: { principals } }] }] });
  let p = problemOf(src(['cluster.local/ns/a/sa/ok', 'spiffe://cluster.local/ns/a/sa/b']));
  assert.equal(p.field, 'spec.rules[0].from[0].source.principals[1]');
  assert.match(p.message, /drop the spiffe:\/\/ prefix/);
  assert.match(p.message, /"cluster\.local\/ns\/a\/sa\/b"/);
  p = problemOf(src(['cluster.local/ns/*/sa/b']));
  assert.equal(p.field, 'spec.rules[0].from[0].source.principals[0]');
  assert.match(p.message, /in the middle/);
  assert.equal(problemOf(src(['*cluster.local*'])).field, 'spec.rules[0].from[0].source.principals[0]');
  p = problemOf(src(['']));
  assert.match(p.message, /must not be empty/);
  assert.equal(problemOf(src('cluster.local/ns/a/sa/b')).field, 'spec.rules[0].from[0].source.principals');
  // The same checks in when values.
  assert.equal(problemOf(ap('w', { rules: [{ when: [{ key: 'source.principal', values: ['spiffe://x/ns/a/sa/b'] }] }] })).field, 'spec.rules[0].when[0].values[0]');
});

test('unknown action, bad CIDR, bad port, unknown when key, bad selector: refused with the field', () => {
  let p = problemOf(ap('a', { action: 'REJECT' }));
  assert.deepEqual([p.field, /ALLOW, DENY/.test(p.message)], ['spec.action', true]);
  p = problemOf(ap('c', { rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/8', '10.0.0.300/24'] } }] }] }));
  assert.equal(p.field, 'spec.rules[0].from[0].source.ipBlocks[1]');
  assert.match(p.message, /10\.0\.0\.300/);
  p = problemOf(ap('c2', { rules: [{ from: [{ source: { notIpBlocks: ['10.0.0.0/33'] } }] }] }));
  assert.deepEqual([p.field, /0\.\.32/.test(p.message)], ['spec.rules[0].from[0].source.notIpBlocks[0]', true]);
  assert.equal(problemOf(ap('c3', { rules: [{ when: [{ key: 'destination.ip', values: ['nope'] }] }] })).field, 'spec.rules[0].when[0].values[0]');
  for (const bad of ['0', '65536', 'http', '80-90']) {
    assert.equal(problemOf(ap('p', { rules: [{ to: [{ operation: { ports: ['80', bad] } }] }] })).field, 'spec.rules[0].to[0].operation.ports[1]', bad);
  }
  p = problemOf(ap('k', { rules: [{ when: [{ key: 'source.port', values: ['1'] }] }] }));
  assert.equal(p.field, 'spec.rules[0].when[0].key');
  assert.match(p.message, /unknown key "source\.port"/);
  assert.equal(problemOf(ap('k2', { rules: [{ when: [{ key: 'source.ip' }] }] })).field, 'spec.rules[0].when[0]');
  p = problemOf(ap('s', { selector: { matchLabels: { app: 3 } } }));
  assert.equal(p.field, 'spec.selector.matchLabels');
  assert.equal(problemOf(ap('s2', { selector: 'app=echo' })).field, 'spec.selector');
  assert.equal(problemOf(ap('e', { rules: [{ from: [{ source: {} }] }] })).field, 'spec.rules[0].from[0].source');
  assert.equal(problemOf(ap('r', { rules: {} })).field, 'spec.rules');
  assert.equal(problemOf(ap('v', {}, 'demo', 'security.istio.io/v2')).field, 'apiVersion');
  assert.equal(problemOf(ap('sa', { rules: [{ from: [{ source: { serviceAccounts: ['sleep'] } }] }] })).field, 'spec.rules[0].from[0].source.serviceAccounts[0]');
});

test('one bad object does not stop the others; duplicates reported; output sorted', () => {
  const r = translatePolicies([
    ap('b', {}), ap('bad', { action: 'NOPE' }), ap('a', {}), ap('a', { action: 'DENY' }), pa('x', {}),
    { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' } },
  ]);
  assert.deepEqual(r.authorizations.map((a) => [a.name, a.action]), [['a', 'ALLOW'], ['b', 'ALLOW']]);
  assert.deepEqual(r.peerAuthentications.map((p) => p.name), ['x']);
  assert.deepEqual(r.problems.map((p) => [p.object, p.field]), [['AuthorizationPolicy demo/bad', 'spec.action'], ['AuthorizationPolicy demo/a', 'metadata.name']]);
});

test('warnings: unknown fields, foreign trust domain, principal not an identity', () => {
  const { rec } = one(ap('w', { rule: [{}], rules: [{ from: [{ source: { principals: ['other.td/ns/a/sa/b', 'sleep'] } }] }] }));
  assert.equal(rec.warnings.length, 3, rec.warnings.join('\n'));
  assert.match(rec.warnings[0], /spec\.rule is not a known field/);
  assert.match(rec.warnings[1], /another trust domain/);
  assert.match(rec.warnings[2], /not of the form/);
});

// ---------------------------------------------------------------- PeerAuthentication

test('PeerAuthentication: mesh-wide STRICT, namespace PERMISSIVE, workload with port-level modes', () => {
  assert.deepEqual(one(pa('default', { mtls: { mode: 'STRICT' } }, 'istio-system')).rec,
    { name: 'default', namespace: 'istio-system', scope: 'MESH', mode: 'STRICT', portLevel: {} });
  assert.deepEqual(one(pa('ns', { mtls: { mode: 'PERMISSIVE' } })).rec, { name: 'ns', namespace: 'demo', scope: 'NAMESPACE', mode: 'PERMISSIVE', portLevel: {} });
  assert.deepEqual(one(pa('w', {
    selector: { matchLabels: { app: 'echo' } }, portLevelMtls: { 8080: { mode: 'PERMISSIVE' }, 9000: { mode: 'STRICT' } },
  }, 'demo', '2026-01-02T03:04:05Z')).rec, {
    name: 'w', namespace: 'demo', scope: 'WORKLOAD', selector: { app: 'echo' }, mode: 'UNSET',
    portLevel: { 8080: 'PERMISSIVE', 9000: 'STRICT' }, createdAt: '2026-01-02T03:04:05Z',
  });
  // A selector in the root namespace selects root-namespace workloads only (not mesh-wide).
  assert.equal(one(pa('sel', { selector: { matchLabels: { app: 'x' } }, mtls: { mode: 'STRICT' } }, 'istio-system')).rec.scope, 'WORKLOAD');
  assert.equal(one(pa('empty', {})).peerAuthentications[0].mode, 'UNSET');
});

test('PeerAuthentication: DISABLE refused (also per port), bad mode, port-level without selector, bad port key', () => {
  let p = problemOf(pa('off', { mtls: { mode: 'DISABLE' } }));
  assert.equal(p.field, 'spec.mtls.mode');
  assert.match(p.message, /DISABLE is not supported/);
  p = problemOf(pa('off2', { selector: { matchLabels: { app: 'a' } }, portLevelMtls: { 8080: { mode: 'DISABLE' } } }));
  assert.equal(p.field, 'spec.portLevelMtls[8080].mode');
  assert.equal(problemOf(pa('m', { mtls: { mode: 'strict' } })).field, 'spec.mtls.mode');
  assert.equal(problemOf(pa('ns', { portLevelMtls: { 8080: { mode: 'STRICT' } } })).field, 'spec.portLevelMtls');
  assert.equal(problemOf(pa('k', { selector: { matchLabels: { app: 'a' } }, portLevelMtls: { http: { mode: 'STRICT' } } })).field, 'spec.portLevelMtls[http]');
});

// ---------------------------------------------------------------- last good version

test('an invalid new version keeps the last good one in force; a deleted object is forgotten', () => {
  const mem = new LastGoodPolicies();
  const good = ap('deny-foo', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['foo'] } }] }] });
  const peer = pa('strict', { mtls: { mode: 'STRICT' } });
  let r = mem.merge(translatePolicies([good, peer]));
  assert.deepEqual([r.authorizations.length, r.peerAuthentications.length, r.kept], [1, 1, []]);

  const broken = ap('deny-foo', { action: 'DENY', rules: [{ from: [{ source: { ipBlocks: ['bad'] } }] }] });
  r = mem.merge(translatePolicies([broken, pa('strict', { mtls: { mode: 'DISABLE' } }), ap('new-bad', { action: 'X' })]));
  assert.deepEqual(r.authorizations.map((a) => a.rules[0].clauses[0][0].namespaces), [['foo']], 'previous version still there');
  assert.equal(r.peerAuthentications[0].mode, 'STRICT');
  assert.deepEqual(r.kept.map((k) => [k.object, k.field]), [
    ['AuthorizationPolicy demo/deny-foo', 'spec.rules[0].from[0].source.ipBlocks[0]'],
    ['PeerAuthentication demo/strict', 'spec.mtls.mode'],
  ]);
  assert.equal(r.problems.length, 3, 'the problems are still reported');

  // Fixed: the new version applies.
  r = mem.merge(translatePolicies([ap('deny-foo', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['bar'] } }] }] })]));
  assert.deepEqual(r.authorizations[0].rules[0].clauses[0][0].namespaces, ['bar']);
  assert.deepEqual(r.peerAuthentications, [], 'deleted');
  // Broken again, then deleted: gone.
  mem.merge(translatePolicies([broken]));
  assert.deepEqual(mem.merge(translatePolicies([])).authorizations, []);
});

// ---------------------------------------------------------------- wire

test('policy records survive the protobuf wire unchanged', () => {
  const authz = translatePolicies([
    ap('full', { selector: { matchLabels: { app: 'echo' } }, action: 'DENY', rules: [{ from: [{ source: { principals: ['a/ns/b/sa/c'], ipBlocks: ['fd00::/64'] } }], to: [{ operation: { ports: ['80'], methods: ['GET'] } }] }, {}] }),
    ap('nothing', {}),
  ]).authorizations;
  const peers = translatePolicies([
    pa('w', { selector: { matchLabels: { app: 'echo' } }, mtls: { mode: 'PERMISSIVE' }, portLevelMtls: { 8080: { mode: 'STRICT' }, 81: { mode: 'UNSET' } } }, 'demo', '2026-01-01T00:00:00Z'),
    pa('mesh', { mtls: { mode: 'STRICT' } }, 'istio-system'),
  ]).peerAuthentications;
  const svc = controlPlaneService().service.DeltaConfig;
  const res: DeltaResponse = {
    type_url: 't', system_version: 'v', nonce: '1', removed_resources: [], trust_bundle: '',
    resources: [
      ...authz.map((a) => ({ name: `${a.namespace}/${a.name}`, version: '1', authorization: authorizationToPb(a) })),
      ...peers.map((p) => ({ name: `${p.namespace}/${p.name}`, version: '1', peer_authentication: peerAuthenticationToPb(p) })),
    ],
  };
  const back = svc.responseDeserialize(svc.responseSerialize(res)) as DeltaResponse;
  assert.deepEqual(back.resources.slice(0, 2).map((r) => authorizationFromPb(r.authorization!)), authz);
  assert.deepEqual(back.resources.slice(2).map((r) => peerAuthenticationFromPb(r.peer_authentication!)), peers);
});

// ---------------------------------------------------------------- workload name

function podOf(name: string, owner?: { kind: string; name: string }, labels: Record<string, string> = {}): Pod {
  return {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name, namespace: 'demo', uid: `uid-${name}`, labels, ...(owner ? { ownerReferences: [{ apiVersion: 'apps/v1', ...owner, uid: 'o', controller: true }] } : {}) },
    spec: { nodeName: 'n1', containers: [] },
    status: { phase: 'Running', podIP: '10.0.0.1' },
  };
}

test('workloadName: Deployment via its ReplicaSet, direct owner, CronJob via its Job, bare pod; on the wire', () => {
  assert.equal(workloadName(podOf('echo-5d8f7c9b4-abcde', { kind: 'ReplicaSet', name: 'echo-5d8f7c9b4' }, { 'pod-template-hash': '5d8f7c9b4' })), 'echo');
  assert.equal(workloadName(podOf('rs-xyz12', { kind: 'ReplicaSet', name: 'rs' })), 'rs', 'a ReplicaSet of its own');
  assert.equal(workloadName(podOf('echo-xk2bd', { kind: 'Deployment', name: 'echo' })), 'echo', 'the local mesh owns pods by Deployment');
  assert.equal(workloadName(podOf('db-0', { kind: 'StatefulSet', name: 'db' })), 'db');
  assert.equal(workloadName(podOf('backup-28391040-q9z8x', { kind: 'Job', name: 'backup-28391040' })), 'backup');
  assert.equal(workloadName(podOf('once-abcde', { kind: 'Job', name: 'once' })), 'once');
  assert.equal(workloadName(podOf('bare')), 'bare');
  const nonController = podOf('x');
  nonController.metadata.ownerReferences = [{ apiVersion: 'v1', kind: 'Node', name: 'n1', uid: 'u' }];
  assert.equal(workloadName(nonController), 'x');

  const [w] = translate({ objects: [podOf('echo-5d8f7c9b4-abcde', { kind: 'ReplicaSet', name: 'echo-5d8f7c9b4' }, { 'pod-template-hash': '5d8f7c9b4' })] }).workloads;
  assert.equal(w.workloadName, 'echo');
  assert.equal(workloadFromPb(workloadToPb(w)).workloadName, 'echo');
});

// ---------------------------------------------------------------- local apply check

test('local apply check: an invalid policy throws naming the field; warnings returned; other kinds untouched', () => {
  assert.throws(() => validatePolicy(ap('bad', { rules: [{ from: [{ source: { principals: ['spiffe://cluster.local/ns/a/sa/b'] } }] }] })), (e: unknown) => {
    assert.ok(isAmbitError(e, 'LOCAL_BAD_OBJECT'));
    assert.match(e.message, /^AuthorizationPolicy demo\/bad: spec\.rules\[0\]\.from\[0\]\.source\.principals\[0\]: .*drop the spiffe:\/\/ prefix/);
    return true;
  });
  assert.deepEqual(validatePolicy(ap('ok', {})), []);
  assert.match(validatePolicy(ap('l7', { rules: [{ to: [{ operation: { paths: ['/x'] } }] }] }))[0], /paths/);
  assert.deepEqual(validatePolicy({ apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: { name: 'v' }, spec: 1 }), []);
  assert.deepEqual(translatePolicyObject(pa('p', { mtls: { mode: 'STRICT' } })).warnings, []);
});
