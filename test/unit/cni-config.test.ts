import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseCniArgs, parseConfig, parseEnv, prevResultIps, cniCodeOf } from '../../src/cni/config.ts';
import { enrollment } from '../../src/cni/pod-metadata.ts';
import { parsePodHandoffReply, parsePodHandoffRequest } from '../../src/api/pod-handoff.ts';
import { isAmbitError } from '../../src/shared/errors.ts';

const throwsCode = (fn: () => unknown, code: string, re: RegExp) =>
  assert.throws(fn, (e: unknown) => isAmbitError(e, code) && re.test((e as Error).message));

describe('CNI invocation parsing', () => {
  const base = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c', CNI_NETNS: '/n', CNI_IFNAME: 'eth0' };

  it('reads the Kubernetes pod from CNI_ARGS, ignoring unknown keys', () => {
    const e = parseEnv({ ...base, CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u;K8S_POD_INFRA_CONTAINER_ID=x' });
    assert.deepEqual(e.pod, { namespace: 'ns', name: 'p', uid: 'u' });
    assert.equal(parseEnv(base).pod, undefined);
    assert.deepEqual(parseCniArgs('A=1;;B=x=y;novalue;=x'), { A: '1', B: 'x=y' });
  });

  it('names the missing or bad environment variable', () => {
    throwsCode(() => parseEnv({}), 'CNI_BAD_ENV', /CNI_COMMAND/);
    throwsCode(() => parseEnv({ ...base, CNI_COMMAND: 'X' }), 'CNI_BAD_ENV', /CNI_COMMAND="X"/);
    for (const v of ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME']) throwsCode(() => parseEnv({ ...base, [v]: undefined }), 'CNI_BAD_ENV', new RegExp(v));
    assert.equal(parseEnv({ ...base, CNI_COMMAND: 'DEL', CNI_NETNS: undefined }).netns, undefined, 'DEL may come without a netns');
    assert.equal(parseEnv({ CNI_COMMAND: 'VERSION' }).command, 'VERSION');
  });

  it('validates the network config, naming the field', () => {
    const ok = { cniVersion: '0.4.0', name: 'n', type: 'ambit-cni', agentSocket: '/s', prevResult: { ips: [] } };
    assert.equal(parseConfig(JSON.stringify(ok), 'ADD').agentSocket, '/s');
    throwsCode(() => parseConfig('{', 'ADD'), 'CNI_BAD_CONFIG', /not valid JSON/);
    throwsCode(() => parseConfig('3', 'ADD'), 'CNI_BAD_CONFIG', /JSON object/);
    throwsCode(() => parseConfig(JSON.stringify({ ...ok, agentSocket: 5 }), 'ADD'), 'CNI_BAD_CONFIG', /"agentSocket"/);
    throwsCode(() => parseConfig(JSON.stringify({ ...ok, prevResult: undefined }), 'ADD'), 'CNI_BAD_CONFIG', /"prevResult"/);
    throwsCode(() => parseConfig(JSON.stringify({ ...ok, prevResult: undefined }), 'CHECK'), 'CNI_BAD_CONFIG', /"prevResult"/);
    assert.equal(parseConfig(JSON.stringify({ ...ok, prevResult: undefined }), 'DEL').prevResult, undefined);
    throwsCode(() => parseConfig(JSON.stringify({ ...ok, cniVersion: '0.2.0' }), 'ADD'), 'CNI_INCOMPATIBLE_VERSION', /"cniVersion"/);
    assert.equal(cniCodeOf('CNI_BAD_CONFIG'), 4);
    assert.equal(cniCodeOf('CNI_BAD_ENV'), 7);
    assert.equal(cniCodeOf('CNI_AGENT_UNREACHABLE'), 11);
    assert.ok(cniCodeOf('CNI_RULES_FAILED') >= 100 && cniCodeOf('CNI_AGENT_REFUSED') >= 100);
  });

  it('takes the pod IPs from prevResult', () => {
    assert.deepEqual(prevResultIps({ ips: [{ address: '10.0.0.5/24' }, { address: 'fd00::5/64' }, { version: '4' }] }), ['10.0.0.5', 'fd00::5']);
    assert.deepEqual(prevResultIps(undefined), []);
  });
});

describe('enrollment', () => {
  const ns = (labels: Record<string, string> = {}) => ({ apiVersion: 'v1', kind: 'Namespace' as const, metadata: { name: 'n', labels } });
  const pod = (labels: Record<string, string> = {}) => ({ apiVersion: 'v1', kind: 'Pod' as const, metadata: { name: 'p', namespace: 'n', labels }, spec: { containers: [] } });
  const amb = { 'istio.io/dataplane-mode': 'ambient' };
  const none = { 'istio.io/dataplane-mode': 'none' };
  it('namespace label enrolls, pod label none opts out, pod label ambient enrolls alone', () => {
    assert.equal(enrollment(pod(), ns(amb)).enrolled, true);
    assert.equal(enrollment(pod(none), ns(amb)).enrolled, false);
    assert.equal(enrollment(pod(amb), ns()).enrolled, true);
    assert.equal(enrollment(pod(amb), undefined).enrolled, true);
    assert.equal(enrollment(pod(), ns()).enrolled, false);
    assert.equal(enrollment(pod(), undefined).enrolled, false);
    assert.equal(enrollment(undefined, ns(amb)).enrolled, false);
  });
});

describe('pod hand-off messages', () => {
  const add = { op: 'add', uid: 'u', name: 'p', namespace: 'n', serviceAccount: 'sa', ips: ['10.0.0.5'], netnsPath: '/n' };
  it('round-trips valid requests and names the bad field', () => {
    assert.deepEqual(parsePodHandoffRequest(JSON.stringify(add)), add);
    assert.deepEqual(parsePodHandoffRequest(Buffer.from('{"op":"del","uid":"u"}')), { op: 'del', uid: 'u' });
    for (const field of ['uid', 'name', 'namespace', 'serviceAccount', 'netnsPath', 'ips']) {
      throwsCode(() => parsePodHandoffRequest(JSON.stringify({ ...add, [field]: undefined })), 'HANDOFF_BAD_REQUEST', new RegExp(`"${field}"`));
    }
    throwsCode(() => parsePodHandoffRequest(JSON.stringify({ ...add, ips: [1] })), 'HANDOFF_BAD_REQUEST', /"ips"/);
    throwsCode(() => parsePodHandoffRequest('nope'), 'HANDOFF_BAD_REQUEST', /not valid JSON/);
    throwsCode(() => parsePodHandoffRequest('null'), 'HANDOFF_BAD_REQUEST', /JSON object/);
  });
  it('parses replies', () => {
    assert.deepEqual(parsePodHandoffReply('{"ok":true}'), { ok: true });
    assert.deepEqual(parsePodHandoffReply('{"ok":false,"code":"X","message":"m"}'), { ok: false, code: 'X', message: 'm' });
    throwsCode(() => parsePodHandoffReply('{"ok":false}'), 'HANDOFF_BAD_REPLY', /"code"/);
    throwsCode(() => parsePodHandoffReply(''), 'HANDOFF_BAD_REPLY', /JSON/);
  });
});
