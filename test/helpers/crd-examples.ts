/**
 * Example mesh objects for the CRD schema tests: valid ones (from Istio's documentation patterns)
 * must be accepted; each invalid one must be refused with an error naming `field`.
 * Shared by test/unit/crd-schemas.test.ts (schema + CEL twins) and test/kube/manifests.test.ts
 * (the real API server).
 */
export interface Example {
  name: string;
  object: Record<string, any>;
  /** For invalid examples: the field path the refusal names (as the API server prints it). */
  field?: string;
}

const NS = 'crd-examples';
const meta = (name: string) => ({ name, namespace: NS });
const ap = (name: string, spec: unknown, version = 'v1') => ({ apiVersion: `security.istio.io/${version}`, kind: 'AuthorizationPolicy', metadata: meta(name), spec });
const pa = (name: string, spec: unknown) => ({ apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: meta(name), spec });
const ra = (name: string, spec: unknown) => ({ apiVersion: 'security.istio.io/v1', kind: 'RequestAuthentication', metadata: meta(name), spec });
const vs = (name: string, spec: unknown, version = 'v1') => ({ apiVersion: `networking.istio.io/${version}`, kind: 'VirtualService', metadata: meta(name), spec });
const dr = (name: string, spec: unknown) => ({ apiVersion: 'networking.istio.io/v1', kind: 'DestinationRule', metadata: meta(name), spec });
const gw = (name: string, spec: unknown) => ({ apiVersion: 'networking.istio.io/v1', kind: 'Gateway', metadata: meta(name), spec });
const se = (name: string, spec: unknown) => ({ apiVersion: 'networking.istio.io/v1', kind: 'ServiceEntry', metadata: meta(name), spec });

export const EXAMPLE_NAMESPACE = NS;

export const VALID: Example[] = [
  { name: 'ap allow by principal and port', object: ap('allow-get', {
    selector: { matchLabels: { app: 'server' } }, action: 'ALLOW',
    rules: [{ from: [{ source: { principals: ['cluster.local/ns/demo/sa/client'] } }], to: [{ operation: { ports: ['8080'], methods: ['GET'] } }],
      when: [{ key: 'source.ip', values: ['10.0.0.0/8'] }] }] }) },
  { name: 'ap deny all (empty rule)', object: ap('deny-all', { action: 'DENY', rules: [{}] }) },
  { name: 'ap allow nothing (empty spec)', object: ap('allow-nothing', {}) },
  { name: 'ap v1beta1 served', object: ap('beta', { action: 'AUDIT', rules: [{ from: [{ source: { namespaces: ['demo'] } }] }] }, 'v1beta1') },
  { name: 'ap CUSTOM with provider (valid API; Ambit reports it)', object: ap('custom', { action: 'CUSTOM', provider: { name: 'ext-authz' }, rules: [{}] }) },
  { name: 'ap targetRefs to a waypoint', object: ap('waypoint', { targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'waypoint' }] }) },
  { name: 'ap serviceAccounts alone', object: ap('sa', { rules: [{ from: [{ source: { serviceAccounts: ['demo/client'] } }] }] }) },
  { name: 'pa strict', object: pa('strict', { mtls: { mode: 'STRICT' } }) },
  { name: 'pa DISABLE (valid API; Ambit reports it)', object: pa('disable', { mtls: { mode: 'DISABLE' } }) },
  { name: 'pa port level with selector', object: pa('ports', { selector: { matchLabels: { app: 'db' } }, mtls: { mode: 'STRICT' }, portLevelMtls: { '5432': { mode: 'PERMISSIVE' } } }) },
  { name: 'ra jwt rules', object: ra('jwt', { selector: { matchLabels: { app: 'api' } }, jwtRules: [{ issuer: 'https://example.com', jwksUri: 'https://example.com/jwks.json', fromHeaders: [{ name: 'x-jwt', prefix: 'Bearer ' }], outputClaimToHeaders: [{ header: 'x-sub', claim: 'sub' }], timeout: '5s' }] }) },
  { name: 'vs weighted routes, match, retries', object: vs('reviews', {
    hosts: ['reviews'], http: [
      { match: [{ headers: { 'end-user': { exact: 'jason' } }, uri: { prefix: '/api' } }], route: [{ destination: { host: 'reviews', subset: 'v2' } }], timeout: '1.5s',
        retries: { attempts: 3, perTryTimeout: '500ms', retryOn: '5xx' } },
      { route: [{ destination: { host: 'reviews', subset: 'v1', port: { number: 9080 } }, weight: 75 }, { destination: { host: 'reviews', subset: 'v3' }, weight: 25 }],
        fault: { delay: { fixedDelay: '7s', percentage: { value: 0.1 } } }, mirror: { host: 'reviews-shadow' }, mirrorPercentage: { value: 50 } },
    ],
    tcp: [{ match: [{ port: 27017 }], route: [{ destination: { host: 'mongo', port: { number: 5555 } } }] }] }) },
  { name: 'vs v1alpha3 served', object: vs('alpha', { hosts: ['ratings'], http: [{ redirect: { uri: '/v1/ratings', redirectCode: 302 } }] }, 'v1alpha3') },
  { name: 'dr subsets and traffic policy', object: dr('reviews', {
    host: 'reviews.demo.svc.cluster.local', trafficPolicy: { loadBalancer: { simple: 'LEAST_REQUEST' }, connectionPool: { tcp: { maxConnections: 100, connectTimeout: '30ms' } },
      outlierDetection: { consecutive5xxErrors: 7, interval: '5m', baseEjectionTime: '15m' }, tls: { mode: 'ISTIO_MUTUAL' },
      portLevelSettings: [{ port: { number: 80 }, loadBalancer: { consistentHash: { httpCookie: { name: 'user', ttl: '0s' } } } }] },
    subsets: [{ name: 'v1', labels: { version: 'v1' } }, { name: 'v2', labels: { version: 'v2' }, trafficPolicy: { loadBalancer: { simple: 'ROUND_ROBIN' } } }] }) },
  { name: 'gw https server', object: gw('edge', { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: 443, name: 'https', protocol: 'HTTPS' }, hosts: ['demo/*.example.com'], tls: { mode: 'SIMPLE', credentialName: 'edge-cert', minProtocolVersion: 'TLSV1_2' } }] }) },
  { name: 'se external https', object: se('external', { hosts: ['api.example.com'], location: 'MESH_EXTERNAL', resolution: 'DNS', ports: [{ number: 443, name: 'https', protocol: 'TLS' }] }) },
  { name: 'se static endpoints', object: se('static', { hosts: ['db.internal'], addresses: ['192.192.192.192/24'], location: 'MESH_INTERNAL', resolution: 'STATIC', ports: [{ number: 27018, name: 'mongodb', protocol: 'MONGO' }], endpoints: [{ address: '2.2.2.2' }, { address: '3.3.3.3', ports: { mongodb: 27019 } }] }) },
];

export const INVALID: Example[] = [
  { name: 'ap unknown action', field: 'spec.action', object: ap('bad-action', { action: 'PERMIT' }) },
  { name: 'ap port out of range', field: 'spec.rules[0].to[0].operation.ports[0]', object: ap('bad-port', { rules: [{ to: [{ operation: { ports: ['70000'] } }] }] }) },
  { name: 'ap port as a number', field: 'spec.rules[0].to[0].operation.ports[0]', object: ap('port-int', { rules: [{ to: [{ operation: { ports: [8080] } }] }] }) },
  { name: 'ap rules not a list', field: 'spec.rules', object: ap('bad-rules', { rules: { from: [] } }) },
  { name: 'ap unknown field', field: 'spec.rules[0].from[0].source.principal', object: ap('typo', { rules: [{ from: [{ source: { principal: ['x'] } }] }] }) },
  { name: 'ap when without key', field: 'spec.rules[0].when[0].key', object: ap('no-key', { rules: [{ when: [{ values: ['a'] }] }] }) },
  { name: 'ap when without values', field: 'spec.rules[0].when[0].values', object: ap('no-values', { rules: [{ when: [{ key: 'source.ip' }] }] }) },
  { name: 'ap empty source', field: 'spec.rules[0].from[0].source', object: ap('empty-source', { rules: [{ from: [{ source: {} }] }] }) },
  { name: 'ap serviceAccounts with principals', field: 'spec.rules[0].from[0].source.serviceAccounts', object: ap('sa-mix', { rules: [{ from: [{ source: { serviceAccounts: ['a/b'], principals: ['x'] } }] }] }) },
  { name: 'ap selector and targetRefs', field: 'spec.selector', object: ap('both', { selector: { matchLabels: { a: 'b' } }, targetRefs: [{ kind: 'Service', name: 's' }] }) },
  { name: 'ap CUSTOM without provider', field: 'spec.provider', object: ap('custom-no-provider', { action: 'CUSTOM', rules: [{}] }) },
  { name: 'ap provider without CUSTOM', field: 'spec.provider', object: ap('provider-allow', { provider: { name: 'x' } }) },
  { name: 'pa unknown mode', field: 'spec.mtls.mode', object: pa('bad-mode', { mtls: { mode: 'REQUIRED' } }) },
  { name: 'pa portLevelMtls without selector', field: 'spec.portLevelMtls', object: pa('no-selector', { portLevelMtls: { '8080': { mode: 'STRICT' } } }) },
  { name: 'pa portLevelMtls bad key', field: 'spec.portLevelMtls', object: pa('bad-key', { selector: { matchLabels: { a: 'b' } }, portLevelMtls: { http: { mode: 'STRICT' } } }) },
  { name: 'pa portLevelMtls port 0', field: 'spec.portLevelMtls', object: pa('port-zero', { selector: { matchLabels: { a: 'b' } }, portLevelMtls: { '0': { mode: 'STRICT' } } }) },
  { name: 'ra jwt rule without issuer', field: 'spec.jwtRules[0].issuer', object: ra('no-issuer', { jwtRules: [{ jwksUri: 'https://x' }] }) },
  { name: 'vs bad timeout', field: 'spec.http[0].timeout', object: vs('bad-timeout', { hosts: ['a'], http: [{ timeout: 'soon', route: [{ destination: { host: 'a' } }] }] }) },
  { name: 'vs two string matches', field: 'spec.http[0].match[0].uri', object: vs('two-matches', { hosts: ['a'], http: [{ match: [{ uri: { exact: '/a', prefix: '/b' } }], route: [{ destination: { host: 'a' } }] }] }) },
  { name: 'vs destination without host', field: 'spec.http[0].route[0].destination.host', object: vs('no-host', { hosts: ['a'], http: [{ route: [{ destination: { subset: 'v1' } }] }] }) },
  { name: 'vs route and redirect', field: 'spec.http[0]', object: vs('route-redirect', { hosts: ['a'], http: [{ route: [{ destination: { host: 'a' } }], redirect: { uri: '/b' } }] }) },
  { name: 'vs port out of range', field: 'spec.tcp[0].match[0].port', object: vs('bad-port', { hosts: ['a'], tcp: [{ match: [{ port: 65536 }], route: [{ destination: { host: 'a' } }] }] }) },
  { name: 'dr without host', field: 'spec.host', object: dr('no-host', { subsets: [{ name: 'v1' }] }) },
  { name: 'dr unknown lb', field: 'spec.trafficPolicy.loadBalancer.simple', object: dr('bad-lb', { host: 'a', trafficPolicy: { loadBalancer: { simple: 'FASTEST' } } }) },
  { name: 'dr simple and consistentHash', field: 'spec.trafficPolicy.loadBalancer.consistentHash', object: dr('lb-both', { host: 'a', trafficPolicy: { loadBalancer: { simple: 'RANDOM', consistentHash: { useSourceIp: true } } } }) },
  { name: 'dr maxEjectionPercent over 100', field: 'spec.trafficPolicy.outlierDetection.maxEjectionPercent', object: dr('eject', { host: 'a', trafficPolicy: { outlierDetection: { maxEjectionPercent: 150 } } }) },
  { name: 'gw server without hosts', field: 'spec.servers[0].hosts', object: gw('no-hosts', { servers: [{ port: { number: 80, protocol: 'HTTP' } }] }) },
  { name: 'gw unknown tls mode', field: 'spec.servers[0].tls.mode', object: gw('bad-tls', { servers: [{ port: { number: 443, protocol: 'HTTPS' }, hosts: ['*'], tls: { mode: 'STRICT' } }] }) },
  { name: 'se without hosts', field: 'spec.hosts', object: se('no-hosts', { ports: [{ number: 80, name: 'http' }] }) },
  { name: 'se unknown resolution', field: 'spec.resolution', object: se('bad-res', { hosts: ['a.example'], resolution: 'MDNS' }) },
  { name: 'se endpoints and workloadSelector', field: 'spec.workloadSelector', object: se('both', { hosts: ['a.example'], endpoints: [{ address: '1.2.3.4' }], workloadSelector: { labels: { app: 'a' } } }) },
];
