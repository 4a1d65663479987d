import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { renderRules } from '../../src/local/kube-proxy.ts';
import { allocateClusterIP, containerCommand, inServiceCidr, kindSupport, resolveTargetPort, validateDeployment, validateService } from '../../src/local/objects.ts';
import { isAmbitError } from '../../src/shared/errors.ts';
import type { Deployment, Pod, Service } from '../../src/api/k8s.ts';
import { nodeInfo, podNetnsName } from '../../src/local/instance.ts';

describe('local objects', () => {
  it('maps built-in images to commands and refuses unknown images without a command', () => {
    assert.match(containerCommand({ name: 'c', image: 'ambit/echo:v2' }, 'p').join(' '), /apps\/echo\.ts$/);
    assert.deepEqual(containerCommand({ name: 'c', image: 'docker.io/ambit/sleep' }, 'p'), ['sleep', 'infinity']);
    assert.deepEqual(containerCommand({ name: 'c', image: 'nginx', command: ['a'], args: ['b'] }, 'p'), ['a', 'b']);
    assert.throws(() => containerCommand({ name: 'c', image: 'nginx' }, 'Pod x/y'), (e) => isAmbitError(e, 'LOCAL_BAD_OBJECT') && /nginx.*command/.test(e.message));
  });

  it('allocates ClusterIPs in 10.96.0.0/16, never a used one', () => {
    const used = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const ip = allocateClusterIP(used);
      assert.ok(inServiceCidr(ip), ip);
      assert.ok(!used.has(ip));
      used.add(ip);
    }
    assert.equal(inServiceCidr('10.97.0.1'), false);
  });

  it('validates services and deployments with the field in the message', () => {
    const svc = (spec: object) => ({ apiVersion: 'v1', kind: 'Service', metadata: { name: 's', namespace: 'n' }, spec }) as Service;
    assert.throws(() => validateService(svc({ type: 'NodePort' })), /spec.type "NodePort"/);
    assert.throws(() => validateService(svc({ ports: [{ port: 70000 }] })), /spec.ports\[0\].port/);
    assert.throws(() => validateService(svc({ clusterIP: '1.2.3.4' })), /spec.clusterIP/);
    const dep = { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'd', namespace: 'n' },
      spec: { replicas: 2, selector: { matchLabels: { app: 'x' } }, template: { metadata: { labels: { app: 'y' } }, spec: { containers: [{ name: 'c', image: 'ambit/echo' }] } } } } as Deployment;
    assert.throws(() => validateDeployment(dep), /matchLabels does not match/);
  });

  it('resolves named and numeric target ports', () => {
    const pod = { spec: { containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080 }] }] } } as Pod;
    assert.equal(resolveTargetPort({ port: 80, targetPort: 'http' }, pod), 8080);
    assert.equal(resolveTargetPort({ port: 80, targetPort: 9000 }, pod), 9000);
    assert.equal(resolveTargetPort({ port: 80 }, pod), 80);
    assert.equal(resolveTargetPort({ port: 80, targetPort: 'grpc' }, pod), undefined);
  });

  it('knows which kinds it runs, stores, or refuses', () => {
    assert.equal(kindSupport({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'a' } }), 'runtime');
    assert.equal(kindSupport({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'a' } }), 'stored');
    assert.equal(kindSupport({ apiVersion: 'apps/v1', kind: 'StatefulSet', metadata: { name: 'a' } }), undefined);
  });

  it('names fit the kernel limits', () => {
    const n = nodeInfo('abcdefghij', 15, 14);
    assert.ok(n.hostVeth.length <= 15, n.hostVeth);
    assert.equal(n.podCidr, '10.244.254.0/24');
    assert.match(podNetnsName('ambit', 'uid-1'), /^ambit-p-[0-9a-f]{10}$/);
  });
});

describe('kube-proxy rules', () => {
  it('spreads over endpoints with random probabilities, masquerades hairpin, removes stale chains', () => {
    const one = renderRules([{ key: 'ns/s', clusterIP: '10.96.1.2', ports: [{ port: 80, protocol: 'TCP', endpoints: [{ ip: '10.244.1.2', port: 8080 }, { ip: '10.244.2.2', port: 8080 }, { ip: '10.244.2.3', port: 8080 }] }] }], new Set());
    assert.match(one.text, /-A AMBIT-SERVICES -d 10\.96\.1\.2\/32 -p tcp -m tcp --dport 80 .* -j AMBIT-SVC-/);
    assert.match(one.text, /--probability 0\.33333 /);
    assert.match(one.text, /--probability 0\.50000 /);
    assert.match(one.text, /-s 10\.244\.1\.2\/32 -j MARK --set-xmark 0x4000\/0x4000/);
    assert.match(one.text, /DNAT --to-destination 10\.244\.2\.3:8080/);
    assert.equal(one.chains.size, 4);
    const two = renderRules([], one.chains);
    for (const c of one.chains) assert.match(two.text, new RegExp(`-X ${c}`));
    assert.equal(two.chains.size, 0);
  });
});
