/**
 * Spec schemas of networking.istio.io VirtualService, DestinationRule, Gateway and ServiceEntry,
 * following the fields of Istio's reference pages (istio.io/latest/docs/reference/config/networking/).
 * The schema refuses what is structurally wrong (types, enums, port ranges, one-of); what needs
 * the rest of the mesh to judge (unknown hosts, missing subsets) is the controller's, on status.
 */
import {
  arr, bool, cel, duration, exportTo, int, map, num, obj, oneOfStrings, percent, port, req, str, stringMap,
  stringMatch, strings, uint, workloadSelector, type Schema,
} from './schema.ts';

const has = (o: any, k: string) => o != null && o[k] !== undefined;

// ---------------------------------------------------------------- VirtualService

const portSelector = () => obj({ number: port('Port on the host being addressed.') }, 'Port of the destination.');

const destination = () => req(obj({
  host: str('Name of a service from the service registry (short names are resolved in the rule\'s namespace).', { minLength: 1 }),
  subset: str('Name of a subset of the service (defined in a DestinationRule).'),
  port: portSelector(),
}, 'Where traffic goes.'), 'host');

const headerOps = () => obj({
  set: stringMap('Overwrite these headers.'),
  add: stringMap('Append to these headers.'),
  remove: strings('Remove these headers.'),
});
const headers = () => obj({ request: headerOps(), response: headerOps() }, 'Header manipulation.');

const httpMatch = () => obj({
  name: str('Name of the match, used in access logs.'),
  uri: stringMatch('URI match.'),
  scheme: stringMatch('URI scheme match.'),
  method: stringMatch('HTTP method match.'),
  authority: stringMatch('HTTP authority match.'),
  headers: map(stringMatch(), 'Header matches (keys lower-case).'),
  port: port('Port being addressed.'),
  sourceLabels: stringMap('Labels of the source workloads.'),
  gateways: strings('Gateways the match applies to.'),
  queryParams: map(stringMatch(), 'Query parameter matches.'),
  ignoreUriCase: bool('Case-insensitive URI match.'),
  withoutHeaders: map(stringMatch(), 'Header matches that must not match.'),
  sourceNamespace: str('Namespace of the source workloads.'),
  statPrefix: str('Prefix of the stats for this match.'),
});

const httpRedirect = () => obj({
  uri: str('Replace the path with this.'),
  authority: str('Replace the authority/host with this.'),
  port: port('Redirect to this port.'),
  derivePort: oneOfStrings(['FROM_PROTOCOL_DEFAULT', 'FROM_REQUEST_PORT'], 'Derive the redirect port.'),
  scheme: str('Redirect to this scheme.'),
  redirectCode: uint('HTTP status code of the redirect (default 301).', { minimum: 300, maximum: 399, format: 'int32' }),
}, 'Send a redirect instead of forwarding.', { maxProperties: 6 });

const httpRoute = () => {
  const s = obj({
    name: str('Name of the route, used in access logs.'),
    match: arr(httpMatch(), 'Conditions (OR of ANDs).'),
    route: arr(req(obj({
      destination: destination(),
      weight: int('Share of traffic (relative).', { minimum: 0 }),
      headers: headers(),
    }), 'destination'), 'Destinations with weights.'),
    redirect: httpRedirect(),
    directResponse: req(obj({
      status: uint('HTTP status code.', { minimum: 200, maximum: 599, format: 'int32' }),
      body: obj({ string: str('Body as text.'), bytes: str('Body as base64 bytes.', { format: 'byte' }) }, 'Response body.', { maxProperties: 1 }),
    }, 'Answer directly.'), 'status'),
    delegate: obj({ name: str('Name of the delegate VirtualService.'), namespace: str('Its namespace.') }, 'Delegate to another VirtualService.'),
    rewrite: obj({
      uri: str('Rewrite the path (or its matched prefix).'),
      authority: str('Rewrite the authority/host.'),
      uriRegexRewrite: obj({ match: str('RE2 regular expression.'), rewrite: str('Replacement.') }, 'Rewrite the path with a regex.'),
    }, 'Rewrite before forwarding.'),
    timeout: duration('Timeout for the request.'),
    retries: obj({
      attempts: int('Number of retries.', { minimum: 0 }),
      perTryTimeout: duration('Timeout per attempt.'),
      retryOn: str('Conditions to retry on (comma separated).'),
      retryRemoteLocalities: bool('Retry on other localities.'),
      backoff: duration('Base interval between retries.'),
    }, 'Retry policy.'),
    fault: obj({
      delay: obj({ fixedDelay: duration('Delay before forwarding.'), percentage: percent(), percent: int(undefined, { minimum: 0, maximum: 100 }) }, 'Delay injection.'),
      abort: obj({
        httpStatus: int('HTTP status to abort with.', { minimum: 200, maximum: 599 }),
        grpcStatus: str('gRPC status to abort with.'),
        http2Error: str('HTTP/2 error to abort with.'),
        percentage: percent(),
      }, 'Abort injection.'),
    }, 'Fault injection.'),
    mirror: destination(),
    mirrors: arr(req(obj({ destination: destination(), percentage: percent() }), 'destination'), 'Mirror destinations.'),
    mirrorPercentage: percent('Share of requests mirrored.'),
    mirrorPercent: int('Deprecated: use mirrorPercentage.', { minimum: 0, maximum: 100 }),
    corsPolicy: obj({
      allowOrigins: arr(stringMatch(), 'Allowed origins.'),
      allowMethods: strings('Allowed methods.'),
      allowHeaders: strings('Allowed headers.'),
      exposeHeaders: strings('Exposed headers.'),
      maxAge: duration('How long preflight results are cached.'),
      allowCredentials: bool('Allow credentials.'),
      unmatchedPreflights: oneOfStrings(['UNSPECIFIED', 'FORWARD', 'IGNORE'], 'What to do with preflights that do not match.'),
    }, 'CORS policy.'),
    headers: headers(),
  }, 'An HTTP route rule.');
  return cel(s, {
    rule: '[has(self.route), has(self.redirect), has(self.directResponse), has(self.delegate)].filter(x, x).size() <= 1',
    message: 'set only one of route, redirect, directResponse or delegate',
  }, (r) => ['route', 'redirect', 'directResponse', 'delegate'].filter((k) => has(r, k)).length <= 1);
};

const routeDestinations = () => arr(req(obj({ destination: destination(), weight: int('Share of traffic (relative).', { minimum: 0 }) }), 'destination'), 'Destinations with weights.');

const l4Match = (sni: boolean) => {
  const p: Record<string, Schema> = {
    destinationSubnets: strings('Destination IPv4/IPv6 addresses or CIDRs.'),
    port: port('Port being addressed.'),
    sourceLabels: stringMap('Labels of the source workloads.'),
    gateways: strings('Gateways the match applies to.'),
    sourceNamespace: str('Namespace of the source workloads.'),
  };
  if (sni) return req(obj({ sniHosts: strings('SNI names to match (wildcards allowed).', { minItems: 1 }), ...p }), 'sniHosts');
  return obj(p);
};

export const virtualServiceSpec = (): Schema => obj({
  hosts: strings('Destination hosts the rules apply to (DNS names, wildcard prefixes, or IPs).'),
  gateways: strings('Gateways (and "mesh") the rules apply on.'),
  http: arr(httpRoute(), 'HTTP route rules, in order.', { maxItems: 4096 }),
  tls: arr(req(obj({ match: arr(l4Match(true)), route: routeDestinations() }), 'match'), 'Rules for TLS passthrough traffic.'),
  tcp: arr(obj({ match: arr(l4Match(false)), route: routeDestinations() }), 'Rules for opaque TCP traffic.'),
  exportTo: exportTo(),
}, 'Routing rules for traffic addressed to some hosts.');

// ---------------------------------------------------------------- DestinationRule

const LB_SIMPLE = ['UNSPECIFIED', 'RANDOM', 'PASSTHROUGH', 'ROUND_ROBIN', 'LEAST_REQUEST', 'LEAST_CONN'];

const loadBalancer = () => cel(obj({
  simple: oneOfStrings(LB_SIMPLE, 'A standard load balancing algorithm.'),
  consistentHash: obj({
    httpHeaderName: str('Hash on this header.'),
    httpCookie: req(obj({ name: str('Cookie name.'), path: str('Cookie path.'), ttl: duration('Cookie lifetime.') }, 'Hash on this cookie.'), 'name'),
    useSourceIp: bool('Hash on the source IP.'),
    httpQueryParameterName: str('Hash on this query parameter.'),
    ringHash: obj({ minimumRingSize: uint('Minimum ring size.') }, 'Ring hash.'),
    maglev: obj({ tableSize: uint('Lookup table size (a prime).') }, 'Maglev.'),
    minimumRingSize: uint('Deprecated: use ringHash.'),
  }, 'Session affinity by consistent hashing.'),
  localityLbSetting: obj({
    distribute: arr(obj({ from: str('Origin locality.'), to: map(uint(), 'Locality to weight.') })),
    failover: arr(obj({ from: str('Origin region.'), to: str('Failover region.') })),
    failoverPriority: strings('Labels that order failover.'),
    enabled: bool('Turn locality load balancing on or off.'),
  }, 'Locality-aware load balancing.'),
  warmupDurationSecs: duration('Deprecated: use warmup.'),
  warmup: req(obj({ duration: duration('Warm-up length.'), minimumPercent: num(undefined, { minimum: 0, maximum: 100 }), aggression: num(undefined, { minimum: 1 }) }), 'duration'),
}, 'Load balancing.'), {
  rule: '!(has(self.simple) && has(self.consistentHash))',
  message: 'set simple or consistentHash, not both',
  fieldPath: '.consistentHash',
  reason: 'FieldValueForbidden',
}, (lb) => !(has(lb, 'simple') && has(lb, 'consistentHash')));

const connectionPool = () => obj({
  tcp: obj({
    maxConnections: int('Maximum connections to a destination host.', { minimum: 0 }),
    connectTimeout: duration('TCP connect timeout.'),
    tcpKeepalive: obj({ probes: uint('Keepalive probes.'), time: duration('Idle time before probes.'), interval: duration('Time between probes.') }),
    maxConnectionDuration: duration('Maximum connection lifetime.'),
    idleTimeout: duration('Idle timeout.'),
  }),
  http: obj({
    http1MaxPendingRequests: int(undefined, { minimum: 0 }),
    http2MaxRequests: int(undefined, { minimum: 0 }),
    maxRequestsPerConnection: int(undefined, { minimum: 0 }),
    maxRetries: int(undefined, { minimum: 0 }),
    idleTimeout: duration(),
    h2UpgradePolicy: oneOfStrings(['DEFAULT', 'DO_NOT_UPGRADE', 'UPGRADE']),
    useClientProtocol: bool(),
    maxConcurrentStreams: int(undefined, { minimum: 0 }),
  }),
}, 'Connection pool limits.');

const outlierDetection = () => obj({
  splitExternalLocalOriginErrors: bool(),
  consecutiveLocalOriginFailures: uint(),
  consecutiveGatewayErrors: uint(),
  consecutive5xxErrors: uint(),
  interval: duration(),
  baseEjectionTime: duration(),
  maxEjectionPercent: int(undefined, { minimum: 0, maximum: 100 }),
  minHealthPercent: int(undefined, { minimum: 0, maximum: 100 }),
}, 'Ejection of unhealthy hosts.');

const clientTls = () => obj({
  mode: oneOfStrings(['DISABLE', 'SIMPLE', 'MUTUAL', 'ISTIO_MUTUAL'], 'TLS mode towards the upstream.'),
  clientCertificate: str(), privateKey: str(), caCertificates: str(), credentialName: str(),
  subjectAltNames: strings(), sni: str(), insecureSkipVerify: bool(), caCrl: str(),
}, 'TLS towards the destination.');

const trafficPolicyFields = () => ({
  loadBalancer: loadBalancer(),
  connectionPool: connectionPool(),
  outlierDetection: outlierDetection(),
  tls: clientTls(),
});

const trafficPolicy = () => obj({
  ...trafficPolicyFields(),
  portLevelSettings: arr(obj({ port: portSelector(), ...trafficPolicyFields() }), 'Per-port overrides.', { maxItems: 64 }),
  tunnel: req(obj({ protocol: oneOfStrings(['CONNECT', 'POST']), targetHost: str(undefined, { minLength: 1 }), targetPort: port() }), 'targetHost', 'targetPort'),
  proxyProtocol: obj({ version: oneOfStrings(['V1', 'V2']) }),
  retryBudget: obj({ percent: num(undefined, { minimum: 0, maximum: 100 }), minRetryConcurrency: uint() }),
}, 'Traffic policy.');

export const destinationRuleSpec = (): Schema => req(obj({
  host: str('Name of a service from the service registry.', { minLength: 1 }),
  trafficPolicy: trafficPolicy(),
  subsets: arr(req(obj({
    name: str('Subset name (referred to by routes).', { minLength: 1 }),
    labels: stringMap('Labels of the subset\'s endpoints.'),
    trafficPolicy: trafficPolicy(),
  }), 'name'), 'Named sets of endpoints.', { maxItems: 256 }),
  exportTo: exportTo(),
  workloadSelector: workloadSelector(),
}, 'Policies for traffic to a service after routing.'), 'host');

// ---------------------------------------------------------------- Gateway

const TLS_VERSIONS = ['TLS_AUTO', 'TLSV1_0', 'TLSV1_1', 'TLSV1_2', 'TLSV1_3'];

const server = () => req(obj({
  port: req(obj({
    number: port('Port the gateway listens on.'),
    protocol: str('HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, TCP, TLS.', { minLength: 1 }),
    name: str('Port name.'),
    targetPort: port('Deprecated.'),
  }), 'number', 'protocol'),
  bind: str('Address or unix socket to bind to.'),
  hosts: strings('Hosts exposed by this server (namespace/host form allowed).', { minItems: 1 }),
  tls: obj({
    httpsRedirect: bool(),
    mode: oneOfStrings(['PASSTHROUGH', 'SIMPLE', 'MUTUAL', 'AUTO_PASSTHROUGH', 'ISTIO_MUTUAL', 'OPTIONAL_MUTUAL']),
    serverCertificate: str(), privateKey: str(), caCertificates: str(), caCrl: str(), credentialName: str(),
    credentialNames: strings(undefined, { maxItems: 2 }),
    tlsCertificates: arr(obj({ serverCertificate: str(), privateKey: str(), caCertificates: str() }), undefined, { maxItems: 2 }),
    subjectAltNames: strings(), verifyCertificateSpki: strings(), verifyCertificateHash: strings(),
    minProtocolVersion: oneOfStrings(TLS_VERSIONS), maxProtocolVersion: oneOfStrings(TLS_VERSIONS),
    cipherSuites: strings(),
  }, 'TLS settings of the server.'),
  defaultEndpoint: str('Deprecated.'),
  name: str('Server name.'),
}), 'port', 'hosts');

export const gatewaySpec = (): Schema => obj({
  servers: arr(server(), 'What the gateway exposes.'),
  selector: stringMap('Labels of the gateway pods this configures.'),
}, 'A load balancer at the edge of the mesh.');

// ---------------------------------------------------------------- ServiceEntry

const RESOLUTIONS = ['NONE', 'STATIC', 'DNS', 'DNS_ROUND_ROBIN', 'DYNAMIC_DNS'];

export const serviceEntrySpec = (): Schema => {
  const s = req(obj({
    hosts: strings('Hosts of the service (DNS names, wildcard prefixes allowed).', { minItems: 1 }),
    addresses: strings('Virtual IPs or CIDRs of the service.'),
    ports: arr(req(obj({
      number: port('Port number.'),
      protocol: str('HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP, TLS.'),
      name: str('Port name (unique in the entry).', { minLength: 1 }),
      targetPort: port('Port on the endpoints.'),
    }), 'number', 'name'), 'Ports of the service.'),
    location: oneOfStrings(['MESH_EXTERNAL', 'MESH_INTERNAL'], 'Inside or outside the mesh.'),
    resolution: oneOfStrings(RESOLUTIONS, 'How endpoints are found.'),
    endpoints: arr(obj({
      address: str('IP, hostname or unix socket of the endpoint.'),
      ports: map(port(), 'Port name to endpoint port.'),
      labels: stringMap(), network: str(), locality: str(),
      weight: uint('Load balancing weight.'),
      serviceAccount: str('Service account of the endpoint workload.'),
    }), 'Endpoints of the service.'),
    workloadSelector: obj({ labels: stringMap('Labels of the pods (and WorkloadEntries) that are the endpoints.') }, 'Endpoints by label.'),
    exportTo: exportTo(),
    subjectAltNames: strings('Identities the endpoints must present.'),
  }, 'A service added to the mesh\'s registry.'), 'hosts');
  cel(s, { rule: '!(has(self.workloadSelector) && has(self.endpoints))', message: 'set endpoints or workloadSelector, not both', fieldPath: '.workloadSelector', reason: 'FieldValueForbidden' },
    (o) => !(has(o, 'workloadSelector') && has(o, 'endpoints')));
  cel(s, { rule: "!(has(self.resolution) && self.resolution == 'NONE' && has(self.endpoints))", message: 'resolution NONE takes no endpoints', fieldPath: '.endpoints', reason: 'FieldValueForbidden' },
    (o) => !(o.resolution === 'NONE' && has(o, 'endpoints')));
  return s;
};
