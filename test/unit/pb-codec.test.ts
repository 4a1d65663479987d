/**
 * The agent's hand-written protobuf codec against proto-loader/protobufjs (what the controller's
 * grpc-js server uses) on the same protos: the schema table matches the .proto files, bytes from
 * either side decode to the same objects on the other, unknown fields are skipped, and malformed
 * input ends in PB_MALFORMED, never in another exception.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import {
  CONTROL_MESSAGES, CREATE_CERTIFICATE_PATH, DELTA_CONFIG_PATH, decodeCreateCertificateRequest, decodeCreateCertificateResponse,
  decodeDeltaRequest, decodeDeltaResponse, encodeCreateCertificateRequest, encodeCreateCertificateResponse, encodeDeltaRequest,
  encodeDeltaResponse,
} from '../../src/controller/push/control-messages.ts';
import { decodeMessage, encodeMessage, type FieldDef, type MessageType } from '../../src/controller/push/pb-codec.ts';
import {
  authorizationToPb, controlPlaneService, peerAuthenticationToPb, serviceToPb, workloadToPb,
  type DeltaRequest, type DeltaResponse,
} from '../../src/controller/push/wire.ts';
import type { MeshService, Workload } from '../../src/api/mesh.ts';
import type { AuthorizationRecord, PeerAuthenticationRecord } from '../../src/api/policy.ts';
import { isAmbitError } from '../../src/shared/errors.ts';

const svc = controlPlaneService().service;
const delta = svc.DeltaConfig;
const cert = svc.CreateCertificate;

// ---------------------------------------------------------------- schema = .proto

test('the schema table matches proto/ambit/v1/*.proto field for field', async () => {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => fileURLToPath(new URL(`../../proto/${target}`, import.meta.url));
  await root.load('ambit/v1/control.proto', { keepCase: true });
  root.resolveAll();
  const protoType = (t: FieldDef['type']): string => (typeof t === 'string' ? t : t.name);
  let checked = 0;
  for (const [name, type] of Object.entries(CONTROL_MESSAGES) as [string, MessageType][]) {
    const ref = root.lookupType(`ambit.v1.${name}`);
    assert.equal(type.name, name);
    const ours = type.fields.map((f) => ({
      name: f.name, id: f.no, type: protoType(f.type), repeated: f.repeated === true, keyType: f.mapKey, oneof: f.oneof,
    }));
    const theirs = ref.fieldsArray.map((f) => {
      const map = f instanceof protobuf.MapField ? f : undefined;
      return {
        name: f.name, id: f.id, type: map ? map.type : f.type, repeated: f.repeated, keyType: map?.keyType, oneof: f.partOf?.name,
      };
    });
    assert.deepEqual(ours, theirs, `message ${name}`);
    for (const f of type.fields) {
      if (typeof f.type === 'object' && f.type.kind === 'enum') {
        const e = root.lookupEnum(`ambit.v1.${f.type.name}`);
        assert.deepEqual(Object.fromEntries(f.type.numbers), e.values, `enum ${f.type.name}`);
      }
    }
    checked++;
  }
  // every message of the three files is in the table
  const all = (ns: protobuf.NamespaceBase): string[] => ns.nestedArray.flatMap((n) => (n instanceof protobuf.Type ? [n.name] : n instanceof protobuf.Namespace ? all(n) : []));
  assert.deepEqual(Object.keys(CONTROL_MESSAGES).sort(), all(root.lookup('ambit.v1') as protobuf.Namespace).sort());
  assert.equal(checked, Object.keys(CONTROL_MESSAGES).length);
  assert.equal(DELTA_CONFIG_PATH, delta.path);
  assert.equal(CREATE_CERTIFICATE_PATH, cert.path);
});

// ---------------------------------------------------------------- samples

const workload: Workload = {
  uid: 'uid-1', name: 'echo-0', namespace: 'demo', addresses: ['10.1.0.5', 'fd00::5'], node: 'n1', serviceAccount: 'sa-é',
  trustDomain: 'cluster.local', protocol: 'HBONE', ready: true, labels: { app: 'echo', 'ü/x': '✓' }, canonicalName: 'echo',
  canonicalRevision: 'v1', waypoint: { namespace: 'demo', name: 'wp', address: '10.96.0.9' },
  services: { 'demo/echo': { 80: 8080, 4294967295: 1 }, 'demo/empty': {} }, workloadName: 'echo',
};
const bareWorkload: Workload = {
  uid: 'uid-2', name: '', namespace: '', addresses: [], node: '', serviceAccount: '', trustDomain: '', protocol: 'TCP',
  ready: false, labels: {}, canonicalName: '', canonicalRevision: '', services: {},
};
const service: MeshService = {
  name: 'echo', namespace: 'demo', hostname: 'echo.demo.svc.cluster.local', vips: ['10.96.0.10'],
  ports: [
    { name: 'web', port: 80, targetPort: 0, protocol: 'TCP' },
    { port: 443, targetPort: 'https', protocol: 'TCP', appProtocol: 'https' },
    { port: 53, targetPort: '', protocol: 'UDP' },
  ],
  endpoints: [{ workloadUid: 'uid-1', address: '10.1.0.5', ports: { 80: 8080 }, ready: true }, { workloadUid: 'uid-x', address: '', ports: {}, ready: false }],
};
const authorization: AuthorizationRecord = {
  name: 'allow', namespace: 'demo', scope: 'WORKLOAD', selector: { app: 'echo' }, action: 'DENY',
  rules: [{ clauses: [[{
    principals: ['cluster.local/ns/demo/sa/a', '*'], notPrincipals: [''], namespaces: ['demo'], notNamespaces: [], sourceIps: ['10.0.0.0/8'],
    notSourceIps: [], destinationIps: [], notDestinationIps: ['1.2.3.4/32'], destinationPorts: [0, 80, 65535, 4294967295], notDestinationPorts: [8080],
  }], []] }, { clauses: [] }],
  warnings: ['a warning'],
};
const peerAuth: PeerAuthenticationRecord = {
  name: 'strict', namespace: 'demo', scope: 'NAMESPACE', mode: 'STRICT', portLevel: { 8080: 'PERMISSIVE', 9090: 'UNSET', 1: 'STRICT' }, createdAt: '2024-01-01T00:00:00Z',
};

function sampleResponse(): DeltaResponse {
  return {
    type_url: 'type.ambit.dev/ambit.v1.Workload', system_version: 'v-1', nonce: '42', removed_resources: ['gone', ''], trust_bundle: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n',
    resources: [
      { name: 'uid-1', version: 'a', workload: workloadToPb(workload) },
      { name: 'uid-2', version: 'b', workload: workloadToPb(bareWorkload) },
      { name: 'demo/echo', version: 'c', service: serviceToPb(service) },
      { name: 'demo/allow', version: 'd', authorization: authorizationToPb(authorization) },
      { name: 'demo/strict', version: 'e', peer_authentication: peerAuthenticationToPb(peerAuth) },
      { name: 'no-body', version: '' },
    ],
  };
}
const requests: DeltaRequest[] = [
  { type_url: 't', node: { id: 'n1' }, initial_resource_versions: { 'uid-1': 'a', 'demo/x': '' }, response_nonce: '', rejected_resources: [] },
  { type_url: 't', node: { id: 'n1' }, initial_resource_versions: {}, response_nonce: '7', error_detail: { code: 3, message: 'uid-1: bad ✗' }, rejected_resources: ['uid-1', ''] },
  { type_url: '', node: null, initial_resource_versions: {}, response_nonce: '', error_detail: { code: -2147483648, message: '' }, rejected_resources: [] },
  { type_url: '', node: { id: '' }, initial_resource_versions: {}, response_nonce: '', error_detail: { code: 2147483647, message: 'x' }, rejected_resources: [] },
];

// ---------------------------------------------------------------- both directions

test('DeltaResponse: protobufjs bytes decode here as proto-loader decodes them, and ours decode there', () => {
  const res = sampleResponse();
  const theirBytes = delta.responseSerialize(res);
  const theirView = delta.responseDeserialize(theirBytes);
  assert.deepEqual(decodeDeltaResponse(theirBytes), theirView);
  const ourBytes = encodeDeltaResponse(res);
  assert.deepEqual(delta.responseDeserialize(ourBytes), theirView);
  assert.deepEqual(decodeDeltaResponse(ourBytes), theirView);
  // the oneof and its defaults survive: port 0 is a target_port, '' a target_port_name
  const ports = (theirView as DeltaResponse).resources[2].service!.ports;
  assert.deepEqual(ports.map((p) => [p.target, p.target_port, p.target_port_name]), [['target_port', 0, undefined], ['target_port_name', undefined, 'https'], ['target_port_name', undefined, '']]);
});

test('DeltaRequest (ACK, NACK, negative status codes): same objects both ways', () => {
  for (const req of requests) {
    const theirView = delta.requestDeserialize(delta.requestSerialize(req));
    assert.deepEqual(decodeDeltaRequest(delta.requestSerialize(req)), theirView);
    assert.deepEqual(delta.requestDeserialize(encodeDeltaRequest(req)), theirView);
  }
});

test('CreateCertificate messages: same objects both ways', () => {
  const req = { csr: '-----BEGIN CERTIFICATE REQUEST-----\nMII...\n', validity_seconds: 4294967295 };
  assert.deepEqual(decodeCreateCertificateRequest(cert.requestSerialize(req)), cert.requestDeserialize(cert.requestSerialize(req)));
  assert.deepEqual(cert.requestDeserialize(encodeCreateCertificateRequest(req)), cert.requestDeserialize(cert.requestSerialize(req)));
  const res = { cert_chain: 'chain', roots: 'roots' };
  assert.deepEqual(decodeCreateCertificateResponse(cert.responseSerialize(res)), cert.responseDeserialize(cert.responseSerialize(res)));
  assert.deepEqual(cert.responseDeserialize(encodeCreateCertificateResponse(res)), res);
  assert.deepEqual(decodeCreateCertificateResponse(Buffer.alloc(0)), cert.responseDeserialize(Buffer.alloc(0)));
  assert.deepEqual(decodeDeltaResponse(Buffer.alloc(0)), delta.responseDeserialize(Buffer.alloc(0)));
});

test('proto3 defaults are not sent (an ACK is small); an empty message is zero bytes', () => {
  assert.equal(encodeDeltaRequest({ type_url: '', node: null, initial_resource_versions: {}, response_nonce: '', rejected_resources: [] }).length, 0);
  const type = 'type.ambit.dev/ambit.v1.Workload';
  const ack = encodeDeltaRequest({ type_url: type, node: { id: 'n1' }, initial_resource_versions: {}, response_nonce: '1', rejected_resources: [] });
  // type_url (tag, length, text) + node (tag, length, id's tag, length, 'n1') + nonce (tag, length, '1')
  assert.equal(ack.length, 2 + type.length + 6 + 3);
});

// ---------------------------------------------------------------- wire variations protobufjs accepts too

function tag(no: number, wt: number): number[] { return varint(no * 8 + wt); }
function varint(v: number): number[] {
  const out: number[] = [];
  while (v > 0x7f) { out.push((v & 0x7f) | 0x80); v = Math.floor(v / 128); }
  out.push(v);
  return out;
}
function ld(no: number, bytes: number[]): number[] { return [...tag(no, 2), ...varint(bytes.length), ...bytes]; }
const str = (s: string): number[] => [...Buffer.from(s)];

test('unknown fields of every wire type are skipped, at the top and nested', () => {
  const unknown = [
    ...tag(99, 0), ...varint(300), ...tag(100, 1), 1, 2, 3, 4, 5, 6, 7, 8, ...ld(101, str('future')), ...tag(102, 5), 1, 2, 3, 4,
    ...tag(103, 3), ...tag(1, 0), 5, ...tag(2, 3), ...tag(2, 4), ...tag(103, 4),
  ];
  const node = ld(2, [...ld(1, str('n1')), ...unknown]);
  const bytes = Buffer.from([...unknown, ...ld(1, str('t')), ...node, ...unknown, ...ld(4, str('9'))]);
  const ours = decodeDeltaRequest(bytes);
  assert.deepEqual(ours, delta.requestDeserialize(bytes));
  assert.equal(ours.node?.id, 'n1');
  assert.equal(ours.response_nonce, '9');
});

test('repeated scalars arrive packed or not; enums keep unknown numbers; a repeated singular field: the last wins', () => {
  const match = [...tag(9, 0), 80, ...ld(9, [...varint(443), ...varint(8080)]), ...tag(9, 0), 1];
  const rule = ld(6, ld(1, ld(1, match)));
  const authz = [...ld(1, str('a')), ...tag(3, 0), 7, ...tag(5, 0), 1, ...rule];
  // action -1: a negative enum is sign-extended to 10 bytes
  const neg = [...tag(5, 0), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
  const res = Buffer.from([...ld(3, [...ld(1, str('demo/a')), ...ld(5, [...authz, ...neg])]), ...ld(1, str('x')), ...ld(1, str('y'))]);
  const ours = decodeDeltaResponse(res);
  assert.deepEqual(ours, delta.responseDeserialize(res));
  const a = ours.resources[0].authorization!;
  assert.deepEqual(a.rules[0].clauses[0].matches[0].destination_ports, [80, 443, 8080, 1]);
  assert.equal(a.scope, 7);
  assert.equal(a.action, -1);
  assert.equal(ours.type_url, 'y');
});

test('a map entry without key or value gets the defaults; a oneof set twice keeps the last member', () => {
  const wl = [...ld(10, ld(2, str('v'))), ...ld(10, ld(1, str('k'))), ...ld(14, ld(1, str('demo/s'))), ...ld(14, [])];
  const res = Buffer.from(ld(3, [...ld(4, ld(1, str('svc'))), ...ld(3, wl)]));
  const r = decodeDeltaResponse(res).resources[0];
  assert.equal(r.resource, 'workload');
  assert.equal(r.service, undefined);
  assert.deepEqual(r.workload!.labels, { '': 'v', k: '' });
  assert.deepEqual(r.workload!.services, { 'demo/s': { ports: {} }, '': { ports: {} } });
  // a label named __proto__ is data, not a prototype
  const proto = decodeDeltaResponse(Buffer.from(ld(3, ld(3, ld(10, [...ld(1, str('__proto__')), ...ld(2, str('x'))])))));
  assert.equal(proto.resources[0].workload!.labels.__proto__, 'x');
  assert.equal(Object.getPrototypeOf(proto.resources[0].workload!.labels), Object.prototype);
});

// ---------------------------------------------------------------- malformed input

function malformed(bytes: number[] | Buffer, re: RegExp): void {
  assert.throws(() => decodeDeltaResponse(Buffer.from(bytes)), (err: unknown) => {
    assert.ok(isAmbitError(err, 'PB_MALFORMED'), String(err));
    assert.match(err.message, re);
    return true;
  });
}

test('malformed input is refused with PB_MALFORMED naming the field', () => {
  malformed([...tag(1, 2), 10, 0x61], /DeltaResponse\.type_url: length 10 runs past the end/);
  malformed([...tag(1, 0), 1], /DeltaResponse\.type_url: wire type 0, expected 2/);
  malformed([...tag(2, 2), 0x80], /truncated varint/);
  malformed([...tag(99, 0), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], /varint longer than 10 bytes/);
  malformed([...tag(99, 6)], /invalid wire type 6/);
  malformed([...tag(99, 7)], /invalid wire type 7/);
  malformed([0x00, 0x00], /field number 0/);
  malformed([...tag(99, 4)], /unexpected end of group 99/);
  malformed([...tag(99, 3), ...tag(98, 4)], /group 99 closed by field 98/);
  malformed([...tag(99, 3), ...tag(1, 0)], /truncated varint/);
  malformed([...tag(99, 1), 1, 2, 3], /truncated field 99/);
  malformed(ld(3, [...tag(3, 2), 5, 1, 2]), /DeltaResponse\.resources\.workload: length 5 runs past the end/);
  malformed(ld(3, ld(3, [...tag(8, 2), 1, 1])), /DeltaResponse\.resources\.workload\.protocol: wire type 2, expected 0/);
  malformed(ld(3, ld(3, ld(10, [...tag(1, 0), 1]))), /labels key: wire type 0, expected 2/);
  malformed(ld(3, ld(5, ld(6, ld(1, ld(1, ld(9, [0xff])))))), /destination_ports: truncated varint/);
});

test('every truncation and random corruption of a real message: a clean result or PB_MALFORMED, nothing else', () => {
  const good = encodeDeltaResponse(sampleResponse());
  for (let n = 0; n < good.length; n++) {
    try {
      decodeDeltaResponse(good.subarray(0, n));
    } catch (err) {
      assert.ok(isAmbitError(err, 'PB_MALFORMED'), `prefix ${n}: ${String(err)}`);
    }
  }
  let seed = 12345;
  const rnd = (): number => { seed = (seed * 1103515245 + 12345) >>> 0; return seed; };
  for (let i = 0; i < 3000; i++) {
    const b = Buffer.from(good);
    for (let k = 0; k < 1 + (rnd() % 4); k++) b[rnd() % b.length] = rnd() & 0xff;
    try {
      decodeDeltaResponse(b);
    } catch (err) {
      assert.ok(isAmbitError(err, 'PB_MALFORMED'), `corruption ${i}: ${String(err)}`);
    }
  }
});

// ---------------------------------------------------------------- encoding errors

test('values that do not fit the schema are refused with PB_ENCODE naming the field', () => {
  const cases: [unknown, RegExp][] = [
    [{ validity_seconds: -1 }, /CreateCertificateRequest\.validity_seconds: number -1 is not a uint32/],
    [{ validity_seconds: 2 ** 32 }, /not a uint32/],
    [{ validity_seconds: 1.5 }, /not a uint32/],
    [{ csr: 5 }, /CreateCertificateRequest\.csr: expected a string, got number 5/],
  ];
  for (const [obj, re] of cases) {
    assert.throws(() => encodeMessage(CONTROL_MESSAGES.CreateCertificateRequest, obj as Record<string, unknown>), (err: unknown) => isAmbitError(err, 'PB_ENCODE') && re.test(err.message));
  }
  assert.throws(() => encodeMessage(CONTROL_MESSAGES.Workload, { protocol: 'QUIC' }), /"QUIC" is not a value of enum TunnelProtocol/);
  assert.throws(() => encodeMessage(CONTROL_MESSAGES.ServicePort, { target_port: 1, target_port_name: 'x' }), /target_port and target_port_name of oneof target are both set/);
  assert.throws(() => encodeMessage(CONTROL_MESSAGES.Endpoint, { ports: { x: 1 } }), /Endpoint\.ports key: number NaN is not a uint32/);
  assert.throws(() => encodeMessage(CONTROL_MESSAGES.Service, { vips: 'x' }), /Service\.vips: expected an array/);
  assert.throws(() => encodeMessage(CONTROL_MESSAGES.Status, { code: 2 ** 31 }), /Status\.code: number 2147483648 is not a int32/);
  // and a round trip of the extremes that do fit
  const back = decodeMessage(CONTROL_MESSAGES.Status, encodeMessage(CONTROL_MESSAGES.Status, { code: -1, message: '' }));
  assert.deepEqual(back, { code: -1, message: '' });
});
