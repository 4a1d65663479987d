/**
 * Ambit's manifests against the real API server: the kustomize entry points (controller/,
 * daemonset/, cni/) pass `kubectl apply --dry-run=server` and then install; the mesh CRDs accept
 * the valid examples and refuse the invalid ones naming the field (schema and CEL rules, with
 * kubectl's strict field validation); short names and printer columns work; the controller's
 * RBAC allows what it needs and not more.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { startKubeControlPlane, stopKubeControlPlane, type KubeControlPlane } from '../../src/local/kube/control-plane.ts';
import { MESH_CRDS } from '../../src/api/crds/definitions.ts';
import { EXAMPLE_NAMESPACE, INVALID, VALID } from '../helpers/crd-examples.ts';
import { kubectl, kubectlOk, newTestDir, sweepLeftovers } from './kube-helpers.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const dirOf = (d: string) => join(ROOT, d);

describe('manifests and CRDs on the real API server', () => {
  let dir = '';
  let cp: KubeControlPlane | undefined;

  before(async () => {
    // The Gateway API CRDs are part of controller/ (fetched from the Go module proxy, cached).
    const fetch = spawnSync('bash', [join(ROOT, 'scripts', 'fetch-gateway-api-crds.sh')], { encoding: 'utf8' });
    assert.equal(fetch.status, 0, fetch.stderr);
    await sweepLeftovers();
    dir = newTestDir();
    cp = await startKubeControlPlane({ dir });
  });
  after(async () => {
    await cp?.stop();
    if (dir) {
      await stopKubeControlPlane(dir);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('CRDs (ours and Gateway API) are accepted and become established', () => {
    kubectlOk(cp!, ['apply', '--server-side', '-k', dirOf('controller/crds')]);
    kubectlOk(cp!, ['apply', '--server-side', '-k', dirOf('controller/gateway-api')]);
    const names = MESH_CRDS.map((c) => `crd/${c.plural}.${c.group}`);
    kubectlOk(cp!, ['wait', '--for=condition=Established', '--timeout=60s', ...names, 'crd/httproutes.gateway.networking.k8s.io', 'crd/gateways.gateway.networking.k8s.io']);
  });

  it('controller/, daemonset/ and cni/ pass a server-side dry run, then install', () => {
    // The dry runs of the namespaced objects need the namespace to exist.
    kubectlOk(cp!, ['apply', '--server-side', '-f', dirOf('controller/namespace.yaml')]);
    for (const d of ['controller', 'daemonset', 'cni']) {
      const r = kubectl(cp!, ['apply', '--server-side', '--dry-run=server', '-k', dirOf(d)]);
      assert.equal(r.code, 0, `${d}/: ${r.stderr}`);
    }
    for (const d of ['controller', 'daemonset', 'cni']) kubectlOk(cp!, ['apply', '--server-side', '-k', dirOf(d)]);
    kubectlOk(cp!, ['-n', 'ambit-system', 'get', 'deployment/ambit-controller', 'daemonset/ambit-agent', 'daemonset/ambit-cni', 'service/ambit-controller']);
  });

  it('the controller service account may do what the controller needs, and no more', () => {
    const can = (verb: string, resource: string, ns?: string) => {
      // TYPE/status means the status subresource here (can-i reads TYPE/NAME otherwise).
      const sub = resource.endsWith('/status');
      const args = ['auth', 'can-i', verb, sub ? resource.slice(0, -7) : resource, '--as=system:serviceaccount:ambit-system:ambit-controller'];
      if (sub) args.push('--subresource=status');
      if (ns) args.push('-n', ns); else args.push('--all-namespaces');
      return kubectl(cp!, args).stdout.trim();
    };
    for (const [verb, res] of [['watch', 'pods'], ['list', 'endpointslices.discovery.k8s.io'], ['watch', 'authorizationpolicies.security.istio.io'],
      ['update', 'authorizationpolicies.security.istio.io/status'], ['patch', 'virtualservices.networking.istio.io/status'], ['create', 'events'],
      ['create', 'tokenreviews.authentication.k8s.io']]) assert.equal(can(verb, res), 'yes', `${verb} ${res}`);
    assert.equal(can('create', 'leases.coordination.k8s.io', 'ambit-system'), 'yes');
    assert.equal(can('update', 'leases.coordination.k8s.io/ambit-controller', 'ambit-system'), 'yes');
    for (const [verb, res] of [['list', 'secrets'], ['get', 'secrets'], ['update', 'authorizationpolicies.security.istio.io'], ['delete', 'pods'], ['create', 'pods']]) {
      assert.equal(can(verb, res), 'no', `${verb} ${res} must be refused`);
    }
    assert.equal(can('create', 'leases.coordination.k8s.io', 'default'), 'no');
    assert.equal(can('get', 'secrets/ambit-ca', 'ambit-system'), 'yes');
    assert.equal(can('get', 'secrets/other', 'ambit-system'), 'no');
    // The CA Secret is made once and never rewritten; the root ConfigMap is kept up to date.
    assert.equal(can('update', 'secrets/ambit-ca', 'ambit-system'), 'no');
    assert.equal(can('update', 'configmaps/ambit-root-cert', 'ambit-system'), 'yes');
  });

  it('valid examples are accepted (every served version used by an example)', () => {
    kubectlOk(cp!, ['create', 'namespace', EXAMPLE_NAMESPACE]);
    const refused: string[] = [];
    for (const ex of VALID) {
      const r = kubectl(cp!, ['apply', '--dry-run=server', '-f', '-'], JSON.stringify(ex.object));
      if (r.code !== 0) refused.push(`${ex.name}: ${r.stderr.trim()}`);
    }
    assert.deepEqual(refused, []);
  });

  it('invalid examples are refused with the field named', () => {
    const wrong: string[] = [];
    for (const ex of INVALID) {
      const r = kubectl(cp!, ['apply', '--dry-run=server', '-f', '-'], JSON.stringify(ex.object));
      if (r.code === 0) wrong.push(`${ex.name}: accepted`);
      else if (!r.stderr.includes(ex.field!)) wrong.push(`${ex.name}: error does not name ${ex.field}: ${r.stderr.trim()}`);
    }
    assert.deepEqual(wrong, []);
  });

  it('short names and printer columns', () => {
    const ap = VALID.find((e) => e.object.kind === 'AuthorizationPolicy' && e.object.spec.action === 'ALLOW')!.object;
    kubectlOk(cp!, ['apply', '-f', '-'], JSON.stringify(ap));
    const out = kubectlOk(cp!, ['-n', EXAMPLE_NAMESPACE, 'get', 'ap']);
    assert.match(out, /^NAME\s+ACTION\s+ACCEPTED\s+AGE/m);
    assert.match(out, new RegExp(`^${ap.metadata.name}\\s+ALLOW\\s`, 'm'));
    const all = kubectl(cp!, ['get', 'vs,dr,gw,se,ap,pa,ra', '-A']);
    assert.equal(all.code, 0, all.stderr);
    // v1beta1 reads the object stored as v1.
    assert.equal(kubectlOk(cp!, ['-n', EXAMPLE_NAMESPACE, 'get', `authorizationpolicies.v1beta1.security.istio.io/${ap.metadata.name}`, '-o', 'jsonpath={.spec.action}']), 'ALLOW');
  });
});
