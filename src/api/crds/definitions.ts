/**
 * The CustomResourceDefinitions of the Istio user API that Ambit serves, assembled from the spec
 * schemas: names and short names as Istio's, every version Istio serves with the same schema
 * (v1 stored), status subresource, printer columns (Istio's, plus whether Ambit accepted it).
 */
import { destinationRuleSpec, gatewaySpec, serviceEntrySpec, virtualServiceSpec } from './networking.ts';
import { authorizationPolicySpec, peerAuthenticationSpec, requestAuthenticationSpec } from './security.ts';
import { meshStatus, obj, str, type Schema } from './schema.ts';

interface Column { name: string; type: 'string' | 'date' | 'integer'; jsonPath: string; description: string; priority?: number }

interface CrdSpec {
  group: 'networking.istio.io' | 'security.istio.io';
  kind: string;
  plural: string;
  shortName: string;
  versions: string[];
  spec: () => Schema;
  columns: Column[];
  description: string;
}

const ACCEPTED: Column = {
  name: 'Accepted', type: 'string', jsonPath: '.status.conditions[?(@.type=="Accepted")].status',
  description: 'Whether the Ambit controller accepted the resource (see status.conditions).',
};
const AGE: Column = { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp', description: 'Time since creation.' };

const NETWORKING_VERSIONS = ['v1', 'v1beta1', 'v1alpha3'];
const SECURITY_VERSIONS = ['v1', 'v1beta1'];

export const MESH_CRDS: CrdSpec[] = [
  {
    group: 'networking.istio.io', kind: 'VirtualService', plural: 'virtualservices', shortName: 'vs', versions: NETWORKING_VERSIONS,
    spec: virtualServiceSpec, description: 'Routing rules for traffic to some hosts (Istio networking API).',
    columns: [
      { name: 'Gateways', type: 'string', jsonPath: '.spec.gateways', description: 'Gateways the routes apply on.' },
      { name: 'Hosts', type: 'string', jsonPath: '.spec.hosts', description: 'Destination hosts.' }, ACCEPTED, AGE],
  },
  {
    group: 'networking.istio.io', kind: 'DestinationRule', plural: 'destinationrules', shortName: 'dr', versions: NETWORKING_VERSIONS,
    spec: destinationRuleSpec, description: 'Traffic policy for a service after routing (Istio networking API).',
    columns: [{ name: 'Host', type: 'string', jsonPath: '.spec.host', description: 'The service the rule is for.' }, ACCEPTED, AGE],
  },
  {
    group: 'networking.istio.io', kind: 'Gateway', plural: 'gateways', shortName: 'gw', versions: NETWORKING_VERSIONS,
    spec: gatewaySpec, description: 'A load balancer at the edge of the mesh (Istio networking API).', columns: [ACCEPTED, AGE],
  },
  {
    group: 'networking.istio.io', kind: 'ServiceEntry', plural: 'serviceentries', shortName: 'se', versions: NETWORKING_VERSIONS,
    spec: serviceEntrySpec, description: 'A service added to the mesh registry (Istio networking API).',
    columns: [
      { name: 'Hosts', type: 'string', jsonPath: '.spec.hosts', description: 'Hosts of the service.' },
      { name: 'Location', type: 'string', jsonPath: '.spec.location', description: 'MESH_EXTERNAL or MESH_INTERNAL.' },
      { name: 'Resolution', type: 'string', jsonPath: '.spec.resolution', description: 'How endpoints are found.' }, ACCEPTED, AGE],
  },
  {
    group: 'security.istio.io', kind: 'AuthorizationPolicy', plural: 'authorizationpolicies', shortName: 'ap', versions: SECURITY_VERSIONS,
    spec: authorizationPolicySpec, description: 'Access control for workloads (Istio security API).',
    columns: [{ name: 'Action', type: 'string', jsonPath: '.spec.action', description: 'ALLOW, DENY, AUDIT or CUSTOM.' }, ACCEPTED, AGE],
  },
  {
    group: 'security.istio.io', kind: 'PeerAuthentication', plural: 'peerauthentications', shortName: 'pa', versions: SECURITY_VERSIONS,
    spec: peerAuthenticationSpec, description: 'Mutual TLS mode of workloads (Istio security API).',
    columns: [{ name: 'Mode', type: 'string', jsonPath: '.spec.mtls.mode', description: 'Workload mTLS mode.' }, ACCEPTED, AGE],
  },
  {
    group: 'security.istio.io', kind: 'RequestAuthentication', plural: 'requestauthentications', shortName: 'ra', versions: SECURITY_VERSIONS,
    spec: requestAuthenticationSpec, description: 'JWT validation for workloads (Istio security API).', columns: [ACCEPTED, AGE],
  },
];

/** The CRD object for one kind. Each version gets its own copy of the schema (the YAML stays plain). */
export function crdObject(c: CrdSpec): Record<string, unknown> {
  const category = c.group.replaceAll('.', '-');
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: {
      name: `${c.plural}.${c.group}`,
      labels: { 'app.kubernetes.io/part-of': 'ambit', 'app.kubernetes.io/component': 'crds' },
    },
    spec: {
      group: c.group,
      names: {
        kind: c.kind, listKind: `${c.kind}List`, plural: c.plural, singular: c.kind.toLowerCase(),
        shortNames: [c.shortName], categories: ['istio-io', category],
      },
      scope: 'Namespaced',
      versions: c.versions.map((name) => ({
        name,
        served: true,
        storage: name === 'v1',
        subresources: { status: {} },
        additionalPrinterColumns: c.columns,
        schema: {
          openAPIV3Schema: obj({
            apiVersion: str(), kind: str(), metadata: { type: 'object' },
            spec: c.spec(),
            status: meshStatus(),
          }, c.description),
        },
      })),
    },
  };
}

/** File name of a CRD under controller/crds/. */
export const crdFileName = (c: CrdSpec): string => `${c.group}_${c.plural}.yaml`;
