/**
 * The schema of proto/ambit/v1/{control,mesh,policy}.proto for pb-codec.ts, field for field (names,
 * numbers, types), plus the ControlPlane method paths. The agent encodes its requests and decodes
 * the controller's responses with it; test/unit/pb-codec.test.ts proves it against proto-loader's
 * encoding of the same protos, so a change to a .proto must be mirrored here.
 */
import { decodeMessage, encodeMessage, enumType, messageType, type FieldDef, type MessageType, type PbObject } from './pb-codec.ts';
import type {
  CreateCertificateRequest, CreateCertificateResponse, DeltaRequest, DeltaResponse,
} from './wire-records.ts';

export const CONTROL_PLANE_SERVICE = 'ambit.v1.ControlPlane';
export const DELTA_CONFIG_PATH = `/${CONTROL_PLANE_SERVICE}/DeltaConfig`;
export const CREATE_CERTIFICATE_PATH = `/${CONTROL_PLANE_SERVICE}/CreateCertificate`;

const s = (name: string, no: number, more: Partial<FieldDef> = {}): FieldDef => ({ name, no, type: 'string', ...more });
const list = (name: string, no: number): FieldDef => s(name, no, { repeated: true });
const u32 = (name: string, no: number, more: Partial<FieldDef> = {}): FieldDef => ({ name, no, type: 'uint32', ...more });
const bool = (name: string, no: number): FieldDef => ({ name, no, type: 'bool' });
const strMap = (name: string, no: number): FieldDef => ({ name, no, type: 'string', mapKey: 'string' });
const portMap = (name: string, no: number): FieldDef => ({ name, no, type: 'uint32', mapKey: 'uint32' });

// ---- mesh.proto

const TunnelProtocol = enumType('TunnelProtocol', { TUNNEL_PROTOCOL_UNSPECIFIED: 0, TCP: 1, HBONE: 2 });
const Waypoint = messageType('Waypoint', [s('namespace', 1), s('name', 2), s('address', 3)]);
const PortMap = messageType('PortMap', [portMap('ports', 1)]);
const Workload = messageType('Workload', [
  s('uid', 1), s('name', 2), s('namespace', 3), list('addresses', 4), s('node', 5), s('service_account', 6),
  s('trust_domain', 7), { name: 'protocol', no: 8, type: TunnelProtocol }, bool('ready', 9), strMap('labels', 10),
  s('canonical_name', 11), s('canonical_revision', 12), { name: 'waypoint', no: 13, type: Waypoint },
  { name: 'services', no: 14, type: PortMap, mapKey: 'string' }, s('workload_name', 15),
]);
const ServicePort = messageType('ServicePort', [
  s('name', 1), u32('port', 2), u32('target_port', 3, { oneof: 'target' }), s('target_port_name', 4, { oneof: 'target' }),
  s('protocol', 5), s('app_protocol', 6),
]);
const Endpoint = messageType('Endpoint', [s('workload_uid', 1), s('address', 2), portMap('ports', 3), bool('ready', 4)]);
const Service = messageType('Service', [
  s('name', 1), s('namespace', 2), s('hostname', 3), list('vips', 4), { name: 'ports', no: 5, type: ServicePort, repeated: true },
  { name: 'endpoints', no: 6, type: Endpoint, repeated: true }, { name: 'waypoint', no: 7, type: Waypoint },
]);

// ---- policy.proto

const PolicyScope = enumType('PolicyScope', { POLICY_SCOPE_UNSPECIFIED: 0, MESH: 1, NAMESPACE: 2, WORKLOAD: 3 });
const PolicyAction = enumType('PolicyAction', { POLICY_ACTION_UNSPECIFIED: 0, ALLOW: 1, DENY: 2 });
const MtlsMode = enumType('MtlsMode', { UNSET: 0, PERMISSIVE: 1, STRICT: 2 });
const AuthzMatch = messageType('AuthzMatch', [
  list('principals', 1), list('not_principals', 2), list('namespaces', 3), list('not_namespaces', 4),
  list('source_ips', 5), list('not_source_ips', 6), list('destination_ips', 7), list('not_destination_ips', 8),
  u32('destination_ports', 9, { repeated: true }), u32('not_destination_ports', 10, { repeated: true }),
]);
const AuthzClause = messageType('AuthzClause', [{ name: 'matches', no: 1, type: AuthzMatch, repeated: true }]);
const AuthzRule = messageType('AuthzRule', [{ name: 'clauses', no: 1, type: AuthzClause, repeated: true }]);
const Authorization = messageType('Authorization', [
  s('name', 1), s('namespace', 2), { name: 'scope', no: 3, type: PolicyScope }, strMap('selector', 4),
  { name: 'action', no: 5, type: PolicyAction }, { name: 'rules', no: 6, type: AuthzRule, repeated: true }, list('warnings', 7),
]);
const PeerAuthentication = messageType('PeerAuthentication', [
  s('name', 1), s('namespace', 2), { name: 'scope', no: 3, type: PolicyScope }, strMap('selector', 4),
  { name: 'mode', no: 5, type: MtlsMode }, { name: 'port_level', no: 6, type: MtlsMode, mapKey: 'uint32' }, s('created_at', 7),
]);

// ---- control.proto

const Node = messageType('Node', [s('id', 1)]);
const Status = messageType('Status', [{ name: 'code', no: 1, type: 'int32' }, s('message', 2)]);
const DeltaRequestType = messageType('DeltaRequest', [
  s('type_url', 1), { name: 'node', no: 2, type: Node }, strMap('initial_resource_versions', 3), s('response_nonce', 4),
  { name: 'error_detail', no: 5, type: Status }, list('rejected_resources', 6),
]);
const Resource = messageType('Resource', [
  s('name', 1), s('version', 2),
  { name: 'workload', no: 3, type: Workload, oneof: 'resource' }, { name: 'service', no: 4, type: Service, oneof: 'resource' },
  { name: 'authorization', no: 5, type: Authorization, oneof: 'resource' },
  { name: 'peer_authentication', no: 6, type: PeerAuthentication, oneof: 'resource' },
]);
const DeltaResponseType = messageType('DeltaResponse', [
  s('type_url', 1), s('system_version', 2), { name: 'resources', no: 3, type: Resource, repeated: true },
  list('removed_resources', 4), s('nonce', 5), s('trust_bundle', 6),
]);
const CreateCertificateRequestType = messageType('CreateCertificateRequest', [s('csr', 1), u32('validity_seconds', 2)]);
const CreateCertificateResponseType = messageType('CreateCertificateResponse', [s('cert_chain', 1), s('roots', 2)]);

/** Every message type by its proto name (tests walk them). */
export const CONTROL_MESSAGES = {
  Waypoint, PortMap, Workload, ServicePort, Endpoint, Service, AuthzMatch, AuthzClause, AuthzRule, Authorization,
  PeerAuthentication, Node, Status, DeltaRequest: DeltaRequestType, Resource, DeltaResponse: DeltaResponseType,
  CreateCertificateRequest: CreateCertificateRequestType, CreateCertificateResponse: CreateCertificateResponseType,
};

/** Typed encode/decode for one top-level message (the codec works on plain objects). */
function codec<T>(type: MessageType): { encode(m: T): Buffer; decode(b: Uint8Array): T } {
  return {
    encode: (m) => encodeMessage(type, m as unknown as PbObject),
    decode: (b) => decodeMessage(type, b) as unknown as T,
  };
}
const deltaRequest = codec<DeltaRequest>(DeltaRequestType);
const deltaResponse = codec<DeltaResponse>(DeltaResponseType);
const certRequest = codec<CreateCertificateRequest>(CreateCertificateRequestType);
const certResponse = codec<CreateCertificateResponse>(CreateCertificateResponseType);
export const encodeDeltaRequest = deltaRequest.encode;
export const decodeDeltaRequest = deltaRequest.decode;
export const encodeDeltaResponse = deltaResponse.encode;
export const decodeDeltaResponse = deltaResponse.decode;
export const encodeCreateCertificateRequest = certRequest.encode;
export const decodeCreateCertificateRequest = certRequest.decode;
export const encodeCreateCertificateResponse = certResponse.encode;
export const decodeCreateCertificateResponse = certResponse.decode;
