/**
 * `ambit local apply` with AuthorizationPolicy / PeerAuthentication: a valid policy is stored (with
 * warnings printed for what L4 cannot enforce as written); an invalid one is refused naming the
 * field, is not stored, and the previous version stays. Runs without the mesh (the check is the
 * runtime's; the controller side is in policy-push.test.ts).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { ambitLocal, newInstance, sweepLeftovers } from './local-helpers.ts';

const INSTANCE = newInstance();
const OBJECTS = `/run/ambit/${INSTANCE}/objects`;
const ambit = (args: string[], input?: string) => ambitLocal(INSTANCE, args, input);
const stored = (kind: string, name: string) => {
  const file = `${OBJECTS}/${kind}/demo/${name}.json`;
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as { spec: { action?: string; rules?: unknown[]; mtls?: { mode: string } } }) : undefined;
};

const NS = `apiVersion: v1\nkind: Namespace\nmetadata: { name: demo }\n`;
const policy = (spec: string) => `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-foo, namespace: demo }
spec:
${spec}`;

describe(`ambit local apply: policies (instance ${INSTANCE})`, () => {
  before(() => {
    sweepLeftovers();
    const r = ambit(['up', '--no-mesh', '--nodes', '1']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(ambit(['apply', '-f', '-'], NS).code, 0);
  });
  after(() => {
    const r = ambit(['down']);
    assert.equal(r.code, 0, r.stderr);
  });

  it('stores a valid policy', () => {
    const r = ambit(['apply', '-f', '-'], policy(`  action: DENY\n  rules: [{ from: [{ source: { namespaces: ["foo"] } }] }]\n`));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /authorizationpolicy\/deny-foo \(demo\) stored/);
    assert.equal(r.stderr, '');
    assert.equal(stored('authorizationpolicy', 'deny-foo')?.spec.action, 'DENY');
  });

  it('refuses an invalid version naming the field; the previous version stays', () => {
    const r = ambit(['apply', '-f', '-'], policy(`  action: DENY\n  rules: [{ from: [{ source: { ipBlocks: ["10.0.0.0/8", "10.1.2.3/40"] } }] }]\n`));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /error: <stdin>: AuthorizationPolicy demo\/deny-foo: spec\.rules\[0\]\.from\[0\]\.source\.ipBlocks\[1\]: "10\.1\.2\.3\/40"/);
    assert.match(r.stderr, /previous version stays/);
    assert.deepEqual(stored('authorizationpolicy', 'deny-foo')?.spec.rules, [{ from: [{ source: { namespaces: ['foo'] } }] }]);

    const bad = ambit(['apply', '-f', '-'], policy(`  action: REJECT\n`).replace('deny-foo', 'other'));
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /spec\.action: must be ALLOW, DENY or AUDIT, got "REJECT"/);
    assert.equal(stored('authorizationpolicy', 'other'), undefined, 'a new invalid object is not stored');

    const principal = ambit(['apply', '-f', '-'], policy(`  rules: [{ from: [{ source: { principals: ["spiffe://cluster.local/ns/a/sa/b"] } }] }]\n`));
    assert.equal(principal.code, 1);
    assert.match(principal.stderr, /spec\.rules\[0\]\.from\[0\]\.source\.principals\[0\]: .*drop the spiffe:\/\/ prefix/);

    const off = ambit(['apply', '-f', '-'], `apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: off, namespace: demo }\nspec: { mtls: { mode: DISABLE } }\n`);
    assert.equal(off.code, 1);
    assert.match(off.stderr, /PeerAuthentication demo\/off: spec\.mtls\.mode: DISABLE is not supported/);
    assert.equal(stored('peerauthentication', 'off'), undefined);
  });

  it('prints warnings for what L4 cannot enforce, and stores the policy', () => {
    const r = ambit(['apply', '-f', '-'], policy(`  rules:\n  - to: [{ operation: { methods: ["GET"], ports: ["8080"] } }]\n`).replace('deny-foo', 'get-only'));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /authorizationpolicy\/get-only \(demo\) stored/);
    assert.match(r.stderr, /^Warning: AuthorizationPolicy demo\/get-only: spec\.rules\[0\] uses spec\.rules\[0\]\.to\[0\]\.operation\.methods, .*allows nothing/m);
    assert.ok(stored('authorizationpolicy', 'get-only'));
    // Unchanged on re-apply: the warning is shown again (the object still has it).
    const again = ambit(['apply', '-f', '-'], policy(`  rules:\n  - to: [{ operation: { methods: ["GET"], ports: ["8080"] } }]\n`).replace('deny-foo', 'get-only'));
    assert.match(again.stdout, /unchanged/);
    assert.match(again.stderr, /^Warning: /m);
  });
});
