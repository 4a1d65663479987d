/** PeerAuthentication: effective mode per workload and port (inheritance, port level, tie-breaks). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Workload } from '../../src/api/mesh.ts';
import type { MtlsMode, PeerAuthenticationRecord, PolicyScope } from '../../src/api/policy.ts';
import { effectiveMtls } from '../../src/ztunnel/authz/peer-auth.ts';

function wl(ns: string, labels: Record<string, string> = {}): Workload {
  return {
    uid: 'u', name: 'p', namespace: ns, addresses: ['10.0.0.5'], node: 'n', serviceAccount: 'default', trustDomain: 'cluster.local',
    protocol: 'HBONE', ready: true, labels, canonicalName: 'p', canonicalRevision: 'v1', services: {},
  };
}
function pa(namespace: string, name: string, mode: MtlsMode, o: { scope?: PolicyScope; selector?: Record<string, string>; portLevel?: Record<number, MtlsMode> } = {}): PeerAuthenticationRecord {
  return { namespace, name, mode, scope: o.scope ?? (o.selector ? 'WORKLOAD' : 'NAMESPACE'), selector: o.selector, portLevel: o.portLevel ?? {} };
}
const W = wl('foo', { app: 'httpbin' });
const MESH_STRICT = pa('istio-system', 'default', 'STRICT', { scope: 'MESH' });

describe('effectiveMtls', () => {
  it('default PERMISSIVE, no policy named', () => {
    assert.deepEqual(effectiveMtls(W, 8000, []), { mode: 'PERMISSIVE' });
  });

  it('mesh-wide STRICT applies everywhere; namespace-wide overrides it; workload overrides both', () => {
    assert.deepEqual(effectiveMtls(W, 8000, [MESH_STRICT]), { mode: 'STRICT', policy: 'istio-system/default' });
    const ns = pa('foo', 'ns', 'PERMISSIVE');
    assert.deepEqual(effectiveMtls(W, 8000, [MESH_STRICT, ns]), { mode: 'PERMISSIVE', policy: 'foo/ns' });
    assert.deepEqual(effectiveMtls(wl('bar'), 8000, [MESH_STRICT, ns]), { mode: 'STRICT', policy: 'istio-system/default' });
    const w = pa('foo', 'httpbin', 'STRICT', { selector: { app: 'httpbin' } });
    assert.deepEqual(effectiveMtls(W, 8000, [MESH_STRICT, ns, w]), { mode: 'STRICT', policy: 'foo/httpbin' });
    assert.deepEqual(effectiveMtls(wl('foo', { app: 'other' }), 8000, [MESH_STRICT, ns, w]), { mode: 'PERMISSIVE', policy: 'foo/ns' });
  });

  it('UNSET inherits: workload UNSET -> namespace; namespace UNSET -> mesh', () => {
    const w = pa('foo', 'httpbin', 'UNSET', { selector: { app: 'httpbin' } });
    const ns = pa('foo', 'ns', 'UNSET');
    assert.deepEqual(effectiveMtls(W, 8000, [MESH_STRICT, ns, w]), { mode: 'STRICT', policy: 'istio-system/default' });
    assert.deepEqual(effectiveMtls(W, 8000, [ns, w]), { mode: 'PERMISSIVE' });
    const nsStrict = pa('foo', 'ns', 'STRICT');
    assert.deepEqual(effectiveMtls(W, 8000, [nsStrict, w]), { mode: 'STRICT', policy: 'foo/ns' });
  });

  it('port level: the target port decides, other ports take the workload mode (or inherit when UNSET)', () => {
    const w = pa('foo', 'httpbin', 'STRICT', { selector: { app: 'httpbin' }, portLevel: { 8080: 'PERMISSIVE' } });
    assert.deepEqual(effectiveMtls(W, 8080, [w]), { mode: 'PERMISSIVE', policy: 'foo/httpbin' });
    assert.deepEqual(effectiveMtls(W, 8000, [w]), { mode: 'STRICT', policy: 'foo/httpbin' });
    const inherit = pa('foo', 'httpbin', 'UNSET', { selector: { app: 'httpbin' }, portLevel: { 9000: 'STRICT' } });
    const nsPermissive = pa('foo', 'ns', 'PERMISSIVE');
    assert.deepEqual(effectiveMtls(W, 9000, [nsPermissive, inherit]), { mode: 'STRICT', policy: 'foo/httpbin' });
    assert.deepEqual(effectiveMtls(W, 9001, [MESH_STRICT, nsPermissive, inherit]), { mode: 'PERMISSIVE', policy: 'foo/ns' });
    const portUnset = pa('foo', 'httpbin', 'PERMISSIVE', { selector: { app: 'httpbin' }, portLevel: { 9000: 'UNSET' } });
    assert.deepEqual(effectiveMtls(W, 9000, [MESH_STRICT, portUnset]), { mode: 'PERMISSIVE', policy: 'foo/httpbin' });
  });

  it('a selector applies only in its own namespace, even in the root namespace', () => {
    const rootSel = pa('istio-system', 'httpbin', 'STRICT', { scope: 'MESH', selector: { app: 'httpbin' } });
    assert.deepEqual(effectiveMtls(W, 8000, [rootSel]), { mode: 'PERMISSIVE' });
    assert.deepEqual(effectiveMtls(wl('istio-system', { app: 'httpbin' }), 8000, [rootSel]), { mode: 'STRICT', policy: 'istio-system/httpbin' });
    const otherNs = pa('bar', 'httpbin', 'STRICT', { selector: { app: 'httpbin' } });
    assert.deepEqual(effectiveMtls(W, 8000, [otherNs]), { mode: 'PERMISSIVE' });
  });

  it('several policies at one level: the oldest wins, ties (or no creation time) by name', () => {
    const a = pa('foo', 'a', 'PERMISSIVE', { selector: { app: 'httpbin' } });
    const b = pa('foo', 'b', 'STRICT', { selector: { app: 'httpbin' } });
    assert.deepEqual(effectiveMtls(W, 8000, [a, b]), { mode: 'PERMISSIVE', policy: 'foo/a' });
    assert.deepEqual(effectiveMtls(W, 8000, [b, a]), { mode: 'PERMISSIVE', policy: 'foo/a' });
    const bOld = { ...b, createdAt: '2024-01-01T00:00:00Z' };
    assert.deepEqual(effectiveMtls(W, 8000, [a, bOld]), { mode: 'STRICT', policy: 'foo/b' }, 'a has no time: b is known older');
    const aNew = { ...a, createdAt: '2025-01-01T00:00:00Z' };
    assert.deepEqual(effectiveMtls(W, 8000, [aNew, bOld]), { mode: 'STRICT', policy: 'foo/b' });
    assert.deepEqual(effectiveMtls(W, 8000, [{ ...aNew, createdAt: bOld.createdAt }, bOld]), { mode: 'PERMISSIVE', policy: 'foo/a' });
    const ns1 = { ...pa('foo', 'ns-z', 'STRICT'), createdAt: '2023-01-01T00:00:00Z' };
    const ns2 = { ...pa('foo', 'ns-a', 'PERMISSIVE'), createdAt: '2024-01-01T00:00:00Z' };
    assert.deepEqual(effectiveMtls(W, 8000, [ns2, ns1]), { mode: 'STRICT', policy: 'foo/ns-z' });
  });
});
