/** Ports, marks and labels that other mesh software and users rely on (see shared/REFERENCE.md). */
export const PORTS = {
  outbound: 15001,
  inboundPlaintext: 15006,
  hbone: 15008,
  admin: 15000,
  metrics: 15020,
  readiness: 15021,
  /** controller: control-plane gRPC (xDS-shaped push and CA), mTLS */
  controlPlane: 15012,
} as const;

/** Mark on every socket the agent opens in a pod netns; the in-pod rules skip it. */
export const SOCKET_MARK = 0x539;
export const SOCKET_MARK_MASK = 0xfff;
/** Connmark for connections the agent delivers into the pod (policy routing back to the agent). */
export const CONN_MARK = 0x111;
export const POLICY_ROUTE_TABLE = 100;
/** Source address kubelet probes are SNATed to on the node; the in-pod rules let it through. */
export const PROBE_SNAT_IP = '169.254.7.127';

export const LABELS = {
  dataplaneMode: 'istio.io/dataplane-mode',
  useWaypoint: 'istio.io/use-waypoint',
  useWaypointNamespace: 'istio.io/use-waypoint-namespace',
  waypointFor: 'istio.io/waypoint-for',
  canonicalName: 'service.istio.io/canonical-name',
  canonicalRevision: 'service.istio.io/canonical-revision',
} as const;

export const DATAPLANE_AMBIENT = 'ambient';
export const DATAPLANE_NONE = 'none';
export const DEFAULT_TRUST_DOMAIN = 'cluster.local';
export const DEFAULT_ROOT_NAMESPACE = 'istio-system';
