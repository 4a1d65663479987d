/**
 * L4 authorization evaluation: Istio's documented L4 examples, scope applicability, string/CIDR/port
 * matching and the plaintext rules (no principal, no namespace).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Workload } from '../../src/api/mesh.ts';
import { emptyMatch, type AuthorizationRecord, type AuthzMatch, type AuthzRule, type PolicyAction, type PolicyScope } from '../../src/api/policy.ts';
import { evaluateAuthorization, type AuthzInput } from '../../src/ztunnel/authz/evaluate.ts';
import { addressBytes, parseCidr, peerFacts, stringMatches } from '../../src/ztunnel/authz/match.ts';

function wl(ns: string, labels: Record<string, string> = {}): Workload {
  return {
    uid: `${ns}-uid`, name: 'pod', namespace: ns, addresses: ['10.0.0.5'], node: 'n1', serviceAccount: 'default',
    trustDomain: 'cluster.local', protocol: 'HBONE', ready: true, labels, canonicalName: 'pod', canonicalRevision: 'v1', services: {},
  };
}

function pol(namespace: string, name: string, action: PolicyAction, rules: AuthzRule[], o: { scope?: PolicyScope; selector?: Record<string, string> } = {}): AuthorizationRecord {
  return { namespace, name, action, rules, scope: o.scope ?? (o.selector ? 'WORKLOAD' : 'NAMESPACE'), selector: o.selector, warnings: [] };
}

const m = (fields: Partial<AuthzMatch>): AuthzMatch => ({ ...emptyMatch(), ...fields });
/** A rule with one `from` clause (alternatives) and optional further clauses. */
const rule = (...clauses: AuthzMatch[][]): AuthzRule => ({ clauses });

const FOO = wl('foo', { app: 'httpbin', version: 'v1' });
const input = (o: Partial<AuthzInput> = {}): AuthzInput => ({
  workload: FOO, srcIdentity: 'spiffe://cluster.local/ns/bar/sa/sleep', srcIp: '10.0.1.7', dstIp: '10.0.0.5', dstPort: 8000, ...o,
});
const plaintext = (o: Partial<AuthzInput> = {}): AuthzInput => ({ ...input(o), srcIdentity: undefined });

describe('string, CIDR and peer helpers', () => {
  it('exact, prefix*, *suffix, * (present values only)', () => {
    assert.equal(stringMatches('a/b', 'a/b'), true);
    assert.equal(stringMatches('a/b', 'a/bc'), false);
    assert.equal(stringMatches('cluster.local/ns/foo/*', 'cluster.local/ns/foo/sa/x'), true);
    assert.equal(stringMatches('cluster.local/ns/foo/*', 'cluster.local/ns/food/sa/x'), false);
    assert.equal(stringMatches('*/sa/sleep', 'cluster.local/ns/bar/sa/sleep'), true);
    assert.equal(stringMatches('*/sa/sleep', 'cluster.local/ns/bar/sa/sleeper'), false);
    assert.equal(stringMatches('*', 'anything'), true);
    assert.equal(stringMatches('*', undefined), false);
    assert.equal(stringMatches('*', ''), false);
  });

  it('peer facts come from the SPIFFE id', () => {
    assert.deepEqual(peerFacts('spiffe://cluster.local/ns/bar/sa/sleep'), { principal: 'cluster.local/ns/bar/sa/sleep', namespace: 'bar' });
    assert.deepEqual(peerFacts(undefined), {});
  });

  it('addresses: IPv4, IPv4-mapped, IPv6 with :: and an embedded quad, garbage', () => {
    assert.deepEqual([...addressBytes('10.1.2.3')!], [10, 1, 2, 3]);
    assert.deepEqual([...addressBytes('::ffff:10.1.2.3')!], [10, 1, 2, 3]);
    assert.deepEqual([...addressBytes('fd00::1')!], [0xfd, 0, ...new Array(13).fill(0), 1]);
    assert.deepEqual([...addressBytes('::1.2.3.4')!].slice(12), [1, 2, 3, 4]);
    assert.deepEqual([...addressBytes('2001:db8:0:0:0:0:0:ff')!].slice(0, 4), [0x20, 0x01, 0x0d, 0xb8]);
    assert.equal(addressBytes('10.1.2'), undefined);
    assert.equal(addressBytes('nope'), undefined);
    assert.equal(parseCidr('10.0.0.0/33'), undefined);
    assert.equal(parseCidr('fd00::/129'), undefined);
    assert.equal(parseCidr('10.0.0.0/x'), undefined);
    assert.deepEqual(parseCidr('10.0.0.1')?.prefix, 32);
    assert.deepEqual(parseCidr('fd00::1')?.prefix, 128);
  });
});

describe('evaluateAuthorization: Istio L4 examples', () => {
  it('no policy: allow', () => {
    const d = evaluateAuthorization(input(), []);
    assert.equal(d.allow, true);
    assert.equal(d.policy, undefined);
    assert.deepEqual(d.verdicts, []);
  });

  it('allow-nothing (spec: {}) denies everything in its namespace and names the policy', () => {
    const p = pol('foo', 'allow-nothing', 'ALLOW', []);
    const d = evaluateAuthorization(input(), [p]);
    assert.equal(d.allow, false);
    assert.equal(d.policy, 'foo/allow-nothing');
    assert.match(d.reason, /no ALLOW policy matched.*foo\/allow-nothing/);
    assert.deepEqual(d.verdicts, [{ policy: 'foo/allow-nothing', action: 'ALLOW', matched: false }]);
    assert.equal(evaluateAuthorization(plaintext(), [p]).allow, false);
    // other namespaces are untouched
    assert.equal(evaluateAuthorization(input({ workload: wl('other') }), [p]).allow, true);
  });

  it('allow-all: a rule {} matches every connection, plaintext too', () => {
    const p = pol('foo', 'allow-all', 'ALLOW', [rule()]);
    assert.equal(evaluateAuthorization(input(), [p]).allow, true);
    assert.equal(evaluateAuthorization(plaintext(), [p]).allow, true);
    assert.equal(evaluateAuthorization(input(), [p]).reason, 'allowed by ALLOW policy foo/allow-all (rule 0)');
  });

  it('deny-all: DENY with a rule {} beats an ALLOW that matches', () => {
    const d = evaluateAuthorization(input(), [pol('foo', 'allow-all', 'ALLOW', [rule()]), pol('foo', 'deny-all', 'DENY', [rule()])]);
    assert.equal(d.allow, false);
    assert.equal(d.policy, 'foo/deny-all');
    assert.match(d.reason, /denied by DENY policy foo\/deny-all \(rule 0\)/);
    assert.equal(d.verdicts.length, 2);
  });

  it('deny from a namespace (namespaces: [bar]); plaintext has no namespace so it is not denied', () => {
    const p = pol('foo', 'deny-bar', 'DENY', [rule([m({ namespaces: ['bar'] })])]);
    assert.equal(evaluateAuthorization(input(), [p]).allow, false);
    assert.equal(evaluateAuthorization(input({ srcIdentity: 'spiffe://cluster.local/ns/baz/sa/sleep' }), [p]).allow, true);
    assert.equal(evaluateAuthorization(plaintext(), [p]).allow, true);
  });

  it('notNamespaces: plaintext peers always satisfy it (deny everything not from foo)', () => {
    const p = pol('foo', 'deny-not-foo', 'DENY', [rule([m({ notNamespaces: ['foo'] })])]);
    assert.equal(evaluateAuthorization(input(), [p]).allow, false);
    assert.equal(evaluateAuthorization(input({ srcIdentity: 'spiffe://cluster.local/ns/foo/sa/x' }), [p]).allow, true);
    assert.equal(evaluateAuthorization(plaintext(), [p]).allow, false);
  });

  it('allow only one principal', () => {
    const p = pol('foo', 'allow-sleep', 'ALLOW', [rule([m({ principals: ['cluster.local/ns/bar/sa/sleep'] })])]);
    assert.equal(evaluateAuthorization(input(), [p]).allow, true);
    const other = evaluateAuthorization(input({ srcIdentity: 'spiffe://cluster.local/ns/bar/sa/other' }), [p]);
    assert.equal(other.allow, false);
    assert.equal(other.policy, 'foo/allow-sleep');
    assert.equal(evaluateAuthorization(plaintext(), [p]).allow, false, 'plaintext has no principal');
  });

  it('principals: ["*"] requires mTLS (the STRICT-like pattern); notPrincipals: ["*"] matches only plaintext', () => {
    const requireMtls = pol('foo', 'require-mtls', 'DENY', [rule([m({ notPrincipals: ['*'] })])]);
    assert.equal(evaluateAuthorization(input(), [requireMtls]).allow, true);
    assert.equal(evaluateAuthorization(plaintext(), [requireMtls]).allow, false);
    const anyPeer = pol('foo', 'any-peer', 'ALLOW', [rule([m({ principals: ['*'] })])]);
    assert.equal(evaluateAuthorization(input(), [anyPeer]).allow, true);
    assert.equal(evaluateAuthorization(plaintext(), [anyPeer]).allow, false);
  });

  it('ipBlocks / notIpBlocks, IPv4 and IPv6, bare addresses', () => {
    const p = pol('foo', 'ips', 'ALLOW', [rule([m({ sourceIps: ['10.0.1.0/24', 'fd00:10::/64', '192.168.7.7/32'] })])]);
    assert.equal(evaluateAuthorization(input(), [p]).allow, true);
    assert.equal(evaluateAuthorization(input({ srcIp: '10.0.2.7' }), [p]).allow, false);
    assert.equal(evaluateAuthorization(input({ srcIp: '::ffff:10.0.1.9' }), [p]).allow, true);
    assert.equal(evaluateAuthorization(input({ srcIp: 'fd00:10::abcd' }), [p]).allow, true);
    assert.equal(evaluateAuthorization(input({ srcIp: 'fd00:11::abcd' }), [p]).allow, false);
    assert.equal(evaluateAuthorization(input({ srcIp: '192.168.7.7' }), [p]).allow, true);
    assert.equal(evaluateAuthorization(input({ srcIp: '192.168.7.8' }), [p]).allow, false);
    const deny = pol('foo', 'not-ips', 'DENY', [rule([m({ notSourceIps: ['10.0.0.0/8'] })])]);
    assert.equal(evaluateAuthorization(input(), [deny]).allow, true);
    assert.equal(evaluateAuthorization(input({ srcIp: '172.16.0.1' }), [deny]).allow, false);
    assert.equal(evaluateAuthorization(input({ srcIp: 'fd00::1' }), [deny]).allow, false, 'an IPv6 peer is outside an IPv4 block');
    const odd = pol('foo', 'odd-prefix', 'ALLOW', [rule([m({ sourceIps: ['10.0.1.128/25'] })])]);
    assert.equal(evaluateAuthorization(input({ srcIp: '10.0.1.127' }), [odd]).allow, false);
    assert.equal(evaluateAuthorization(input({ srcIp: '10.0.1.200' }), [odd]).allow, true);
    const all = pol('foo', 'everything', 'ALLOW', [rule([m({ sourceIps: ['0.0.0.0/0'] })])]);
    assert.equal(evaluateAuthorization(input({ srcIp: '1.2.3.4' }), [all]).allow, true);
  });

  it('ports / notPorts (to.operation) and destination IPs', () => {
    const p = pol('foo', 'ports', 'ALLOW', [rule([m({ destinationPorts: [8000, 9000] })])]);
    assert.equal(evaluateAuthorization(input(), [p]).allow, true);
    assert.equal(evaluateAuthorization(input({ dstPort: 8001 }), [p]).allow, false);
    const notPorts = pol('foo', 'not-ports', 'DENY', [rule([m({ notDestinationPorts: [8000] })])]);
    assert.equal(evaluateAuthorization(input(), [notPorts]).allow, true);
    assert.equal(evaluateAuthorization(input({ dstPort: 22 }), [notPorts]).allow, false);
    const dst = pol('foo', 'dst', 'ALLOW', [rule([m({ destinationIps: ['10.0.0.0/24'] })])]);
    assert.equal(evaluateAuthorization(input(), [dst]).allow, true);
    assert.equal(evaluateAuthorization(input({ dstIp: '10.0.9.5' }), [dst]).allow, false);
    const notDst = pol('foo', 'not-dst', 'DENY', [rule([m({ notDestinationIps: ['10.0.0.5'] })])]);
    assert.equal(evaluateAuthorization(input(), [notDst]).allow, true);
    assert.equal(evaluateAuthorization(input({ dstIp: '10.0.0.6' }), [notDst]).allow, false);
  });

  it('a rule needs every clause (from AND to AND when); a clause needs any of its matches', () => {
    // from: [{namespaces:[bar]}, {principals:[.../sa/admin]}], to: [{ports:[8000]}], when source.ip in 10.0.1.0/24
    const r = rule(
      [m({ namespaces: ['bar'] }), m({ principals: ['cluster.local/ns/ops/sa/admin'] })],
      [m({ destinationPorts: [8000] })],
      [m({ sourceIps: ['10.0.1.0/24'] })],
    );
    const p = pol('foo', 'combo', 'ALLOW', [r]);
    assert.equal(evaluateAuthorization(input(), [p]).allow, true);
    assert.equal(evaluateAuthorization(input({ srcIdentity: 'spiffe://cluster.local/ns/ops/sa/admin' }), [p]).allow, true);
    assert.equal(evaluateAuthorization(input({ srcIdentity: 'spiffe://cluster.local/ns/ops/sa/intern' }), [p]).allow, false);
    assert.equal(evaluateAuthorization(input({ dstPort: 9000 }), [p]).allow, false);
    assert.equal(evaluateAuthorization(input({ srcIp: '10.9.9.9' }), [p]).allow, false);
    // several rules: any may match; the verdict names which
    const two = pol('foo', 'two', 'ALLOW', [rule([m({ destinationPorts: [1] })]), rule([m({ destinationPorts: [8000] })])]);
    const d = evaluateAuthorization(input(), [two]);
    assert.deepEqual(d.verdicts, [{ policy: 'foo/two', action: 'ALLOW', matched: true, rule: 1 }]);
  });

  it('when keys: source.namespace / source.principal / destination.port with notValues', () => {
    // when source.namespace notValues [foo] -> notNamespaces; when destination.port values [8000]
    const p = pol('foo', 'when', 'DENY', [rule([m({ notNamespaces: ['foo'] })], [m({ destinationPorts: [8000] })])]);
    assert.equal(evaluateAuthorization(input(), [p]).allow, false);
    assert.equal(evaluateAuthorization(input({ dstPort: 9000 }), [p]).allow, true);
    const principal = pol('foo', 'when-principal', 'ALLOW', [rule([m({ principals: ['*/sa/sleep'] })])]);
    assert.equal(evaluateAuthorization(input(), [principal]).allow, true);
    assert.equal(evaluateAuthorization(input({ srcIdentity: 'spiffe://cluster.local/ns/bar/sa/other' }), [principal]).allow, false);
  });

  it('DENY rule with an L4 part left (L7 parts removed by the controller) denies more', () => {
    // methods: [POST] + from namespaces [bar] -> the controller keeps only namespaces [bar]
    const p = pol('foo', 'deny-post-from-bar', 'DENY', [rule([m({ namespaces: ['bar'] })])]);
    p.warnings.push('rule 0: to.operation.methods needs L7; the DENY rule keeps its L4 part');
    assert.equal(evaluateAuthorization(input(), [p]).allow, false);
    // an ALLOW rule that needed L7 was dropped: an ALLOW with no rules left allows nothing
    const a = pol('foo', 'allow-get', 'ALLOW', []);
    assert.equal(evaluateAuthorization(input(), [a]).allow, false);
  });

  it('several ALLOW policies: one match is enough; the reason lists those that apply', () => {
    const ps = [
      pol('foo', 'a', 'ALLOW', [rule([m({ destinationPorts: [1] })])]),
      pol('foo', 'b', 'ALLOW', [rule([m({ destinationPorts: [2] })])]),
      pol('foo', 'c', 'ALLOW', [rule([m({ destinationPorts: [3] })])]),
      pol('foo', 'd', 'ALLOW', [rule([m({ destinationPorts: [4] })])]),
    ];
    const d = evaluateAuthorization(input(), ps);
    assert.equal(d.allow, false);
    assert.match(d.reason, /policies foo\/a, foo\/b, foo\/c and 1 more apply/);
    assert.equal(evaluateAuthorization(input({ dstPort: 3 }), ps).policy, 'foo/c');
  });
});

describe('evaluateAuthorization: scope', () => {
  it('mesh-wide (root namespace) applies in every namespace; with a selector only to matching labels anywhere', () => {
    const mesh = pol('istio-system', 'deny-bar', 'DENY', [rule([m({ namespaces: ['bar'] })])], { scope: 'MESH' });
    assert.equal(evaluateAuthorization(input(), [mesh]).allow, false);
    assert.equal(evaluateAuthorization(input({ workload: wl('other') }), [mesh]).allow, false);
    const sel = pol('istio-system', 'deny-httpbin', 'DENY', [rule()], { scope: 'MESH', selector: { app: 'httpbin' } });
    assert.equal(evaluateAuthorization(input(), [sel]).allow, false);
    assert.equal(evaluateAuthorization(input({ workload: wl('other', { app: 'httpbin' }) }), [sel]).allow, false);
    assert.equal(evaluateAuthorization(input({ workload: wl('other', { app: 'x' }) }), [sel]).allow, true);
    assert.equal(evaluateAuthorization(input({ workload: wl('other', { app: 'x' }) }), [sel]).verdicts.length, 0);
  });

  it('namespace scope applies only in its namespace', () => {
    const p = pol('bar', 'allow-nothing', 'ALLOW', []);
    assert.equal(evaluateAuthorization(input(), [p]).allow, true);
    assert.equal(evaluateAuthorization(input({ workload: wl('bar') }), [p]).allow, false);
  });

  it('workload selector: every label must match, in its own namespace only', () => {
    const p = pol('foo', 'httpbin-v1', 'ALLOW', [], { selector: { app: 'httpbin', version: 'v1' } });
    assert.equal(evaluateAuthorization(input(), [p]).allow, false);
    assert.equal(evaluateAuthorization(input({ workload: wl('foo', { app: 'httpbin', version: 'v2' }) }), [p]).allow, true);
    assert.equal(evaluateAuthorization(input({ workload: wl('foo', { app: 'httpbin' }) }), [p]).allow, true);
    assert.equal(evaluateAuthorization(input({ workload: wl('bar', { app: 'httpbin', version: 'v1' }) }), [p]).allow, true);
  });

  it('mesh DENY + namespace ALLOW: deny first; a mesh ALLOW counts as an applicable ALLOW', () => {
    const meshDeny = pol('istio-system', 'deny-port-22', 'DENY', [rule([m({ destinationPorts: [22] })])], { scope: 'MESH' });
    const nsAllow = pol('foo', 'allow-bar', 'ALLOW', [rule([m({ namespaces: ['bar'] })])]);
    assert.equal(evaluateAuthorization(input(), [meshDeny, nsAllow]).allow, true);
    assert.equal(evaluateAuthorization(input({ dstPort: 22 }), [meshDeny, nsAllow]).policy, 'istio-system/deny-port-22');
    const meshAllow = pol('istio-system', 'allow-ops', 'ALLOW', [rule([m({ namespaces: ['ops'] })])], { scope: 'MESH' });
    const d = evaluateAuthorization(input(), [meshAllow, nsAllow]);
    assert.equal(d.allow, true);
    assert.equal(d.policy, 'foo/allow-bar');
    assert.deepEqual(d.verdicts.map((v) => [v.policy, v.matched]), [['istio-system/allow-ops', false], ['foo/allow-bar', true]]);
  });
});
