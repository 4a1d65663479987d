/**
 * Spec schemas of security.istio.io AuthorizationPolicy, PeerAuthentication and
 * RequestAuthentication, following Istio's reference pages
 * (istio.io/latest/docs/reference/config/security/). Structural mistakes are refused here with
 * the field named; what is valid API but not enforceable by Ambit (CUSTOM, DISABLE, L7 fields at
 * L4) is accepted and reported on the object's status by the controller
 * (src/controller/translate/policies.ts).
 */
import {
  PORT_STRING, arr, bool, cel, duration, isPortString, map, obj, oneOfStrings, policyTargetRef, req, str,
  strings, workloadSelector, type Schema,
} from './schema.ts';

const has = (o: any, k: string) => o != null && o[k] !== undefined;
const nonEmpty = (o: any, k: string) => Array.isArray(o?.[k]) ? o[k].length > 0 : has(o, k);
const portStrings = (description: string) => arr(str(undefined, { pattern: PORT_STRING }), description);

/** selector and targetRef/targetRefs pick workloads in different ways; Istio allows one. */
function selectorOrTargets(s: Schema): Schema {
  cel(s, {
    rule: '!(has(self.selector) && (has(self.targetRef) || (has(self.targetRefs) && size(self.targetRefs) > 0)))',
    message: 'set selector or targetRef/targetRefs, not both', fieldPath: '.selector', reason: 'FieldValueForbidden',
  }, (o) => !(has(o, 'selector') && (has(o, 'targetRef') || nonEmpty(o, 'targetRefs'))));
  return cel(s, {
    rule: '!(has(self.targetRef) && has(self.targetRefs))',
    message: 'set targetRef or targetRefs, not both', fieldPath: '.targetRef', reason: 'FieldValueForbidden',
  }, (o) => !(has(o, 'targetRef') && has(o, 'targetRefs')));
}

const source = () => {
  const s = obj({
    principals: strings('Peer identities (TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT; prefix*, *suffix, *).'),
    notPrincipals: strings('Peer identities that must not match.'),
    requestPrincipals: strings('JWT principals (ISS/SUB) — needs L7.'),
    notRequestPrincipals: strings('JWT principals that must not match — needs L7.'),
    namespaces: strings('Namespaces of the peer.'),
    notNamespaces: strings('Namespaces the peer must not be in.'),
    ipBlocks: strings('Source IPs or CIDRs.'),
    notIpBlocks: strings('Source IPs or CIDRs that must not match.'),
    remoteIpBlocks: strings('Original client IPs (X-Forwarded-For) — needs L7.'),
    notRemoteIpBlocks: strings('Original client IPs that must not match — needs L7.'),
    serviceAccounts: strings('Peer service accounts as NAMESPACE/NAME.', { maxItems: 16 }),
    notServiceAccounts: strings('Peer service accounts that must not match.', { maxItems: 16 }),
  }, 'Who the request comes from.', { minProperties: 1 });
  return cel(s, {
    rule: '!((has(self.serviceAccounts) || has(self.notServiceAccounts)) && (has(self.principals) || has(self.notPrincipals) || has(self.namespaces) || has(self.notNamespaces)))',
    message: 'serviceAccounts/notServiceAccounts cannot be combined with principals or namespaces in one source; use separate from entries',
    fieldPath: '.serviceAccounts', reason: 'FieldValueForbidden',
  }, (o) => !((has(o, 'serviceAccounts') || has(o, 'notServiceAccounts')) && ['principals', 'notPrincipals', 'namespaces', 'notNamespaces'].some((k) => has(o, k))));
};

const operation = () => obj({
  hosts: strings('Host header values — needs L7.'),
  notHosts: strings('Host header values that must not match — needs L7.'),
  ports: portStrings('Destination ports, as strings ("8080").'),
  notPorts: portStrings('Destination ports that must not match, as strings.'),
  methods: strings('HTTP methods — needs L7.'),
  notMethods: strings('HTTP methods that must not match — needs L7.'),
  paths: strings('HTTP paths — needs L7.'),
  notPaths: strings('HTTP paths that must not match — needs L7.'),
}, 'What the request does.', { minProperties: 1 });

const condition = () => {
  const s = req(obj({
    key: str('Attribute name, e.g. source.ip, destination.port, request.headers[x-token].', { minLength: 1 }),
    values: strings('Values that match.'),
    notValues: strings('Values that must not match.'),
  }, 'An additional condition.'), 'key');
  return cel(s, {
    rule: '(has(self.values) && size(self.values) > 0) || (has(self.notValues) && size(self.notValues) > 0)',
    message: 'set values or notValues', fieldPath: '.values', reason: 'FieldValueRequired',
  }, (o) => nonEmpty(o, 'values') || nonEmpty(o, 'notValues'));
};

export const authorizationPolicySpec = (): Schema => {
  const s = obj({
    selector: workloadSelector(),
    targetRef: policyTargetRef(),
    targetRefs: arr(policyTargetRef(), 'Resources the policy attaches to (waypoints).', { maxItems: 16 }),
    rules: arr(obj({
      from: arr(req(obj({ source: source() }), 'source'), 'Sources (OR); absent means any.', { maxItems: 256 }),
      to: arr(req(obj({ operation: operation() }), 'operation'), 'Operations (OR); absent means any.', { maxItems: 256 }),
      when: arr(condition(), 'Conditions (AND).', { maxItems: 256 }),
    }, 'A rule: from AND to AND when.'), 'Rules (OR); an ALLOW policy with no rules allows nothing.', { maxItems: 512 }),
    action: oneOfStrings(['ALLOW', 'DENY', 'AUDIT', 'CUSTOM'], 'ALLOW (default), DENY, AUDIT or CUSTOM.'),
    provider: req(obj({ name: str('Name of the extension provider (mesh config).', { minLength: 1 }) }, 'Extension provider, for action CUSTOM.'), 'name'),
  }, 'Access control for workloads.');
  selectorOrTargets(s);
  cel(s, {
    rule: "has(self.action) && self.action == 'CUSTOM' ? has(self.provider) : !has(self.provider)",
    message: 'provider is required with action CUSTOM and only allowed with it', fieldPath: '.provider', reason: 'FieldValueInvalid',
  }, (o) => (o.action === 'CUSTOM' ? has(o, 'provider') : !has(o, 'provider')));
  return s;
};

const MTLS_MODES = ['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT'];
const mtls = (description: string) => obj({ mode: oneOfStrings(MTLS_MODES, 'UNSET (inherit), DISABLE, PERMISSIVE or STRICT.') }, description);

export const peerAuthenticationSpec = (): Schema => {
  const s = obj({
    selector: workloadSelector(),
    mtls: mtls('Mutual TLS mode of the selected workloads.'),
    portLevelMtls: map(mtls('Mode for this port.'), 'Per-port modes, keyed by the workload\'s port number.', { maxProperties: 128 }),
  }, 'Mutual TLS mode of workloads.');
  cel(s, {
    rule: 'has(self.portLevelMtls) && size(self.portLevelMtls) > 0 ? has(self.selector) && has(self.selector.matchLabels) && size(self.selector.matchLabels) > 0 : true',
    message: 'portLevelMtls requires a selector with matchLabels (port-level modes apply to selected workloads only)',
    fieldPath: '.portLevelMtls', reason: 'FieldValueForbidden',
  }, (o) => !(o.portLevelMtls && Object.keys(o.portLevelMtls).length > 0) || Object.keys(o.selector?.matchLabels ?? {}).length > 0);
  cel(s, {
    rule: `!has(self.portLevelMtls) || self.portLevelMtls.all(k, k.matches('${PORT_STRING}'))`,
    message: 'portLevelMtls keys must be port numbers 1..65535', fieldPath: '.portLevelMtls', reason: 'FieldValueInvalid',
  }, (o) => !o.portLevelMtls || Object.keys(o.portLevelMtls).every(isPortString));
  return s;
};

export const requestAuthenticationSpec = (): Schema => selectorOrTargets(obj({
  selector: workloadSelector(),
  targetRef: policyTargetRef(),
  targetRefs: arr(policyTargetRef(), 'Resources the policy attaches to (waypoints).', { maxItems: 16 }),
  jwtRules: arr(req(obj({
    issuer: str('Issuer of the JWT (its iss claim).', { minLength: 1 }),
    audiences: strings('Accepted audiences (empty: the service name).'),
    jwksUri: str('URL of the issuer\'s JSON Web Key Set.', { maxLength: 2048 }),
    jwks: str('JSON Web Key Set inline.'),
    fromHeaders: arr(req(obj({ name: str('Header name.', { minLength: 1 }), prefix: str('Prefix before the token, e.g. "Bearer ".') }), 'name'), 'Headers the token is read from.'),
    fromParams: strings('Query parameters the token is read from.'),
    fromCookies: strings('Cookies the token is read from.'),
    outputPayloadToHeader: str('Header that receives the verified payload (base64).'),
    forwardOriginalToken: bool('Keep the token on the forwarded request.'),
    outputClaimToHeaders: arr(req(obj({ header: str(undefined, { minLength: 1 }), claim: str(undefined, { minLength: 1 }) }), 'header', 'claim'), 'Claims copied to headers.'),
    timeout: duration('Timeout fetching the JWKS.'),
    spaceDelimitedClaims: strings('Claims whose value is a space-separated list.'),
  }), 'issuer'), 'JWTs accepted by the selected workloads.', { maxItems: 4096 }),
}, 'JWT validation for workloads.'));
