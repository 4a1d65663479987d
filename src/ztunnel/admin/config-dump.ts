/**
 * What the agent's admin API shows under /config_dump: its whole view of the mesh (workloads,
 * services, policies) plus what only this agent holds (certificates, live connections, the pods it
 * serves). Plain JSON so the CLI (and people with curl) can read it; the CLI imports these types.
 */
import { X509Certificate } from 'node:crypto';
import type { MeshService, Workload } from '../../api/mesh.ts';
import type { AuthorizationRecord, PeerAuthenticationRecord } from '../../api/policy.ts';
import type { PodHandoffAdd } from '../../api/pod-handoff.ts';
import type { StateView } from '../state/store.ts';
import type { CertificateManager, CertificateState } from '../identity/certificate-manager.ts';
import type { ConnectionInfo, ConnectionTracker } from '../proxy/connections.ts';

/** One certificate of a chain other than the leaf (intermediates and the trust anchors). */
export interface ChainCertDump {
  type: 'Intermediate' | 'Root';
  subject: string;
  serial: string;
  notBefore: string;
  notAfter: string;
}

export interface CertificateDump {
  /** SPIFFE id of the workload identity. */
  identity: string;
  state: CertificateState;
  /** Leaf serial (hex) and validity, once a certificate was issued. */
  serial?: string;
  notBefore?: string;
  notAfter?: string;
  lastError?: string;
  nextAttemptAt?: string;
  chain: ChainCertDump[];
}

export interface ConnectionDump extends Omit<ConnectionInfo, 'startedAt'> {
  startedAt: string;
}

export interface ServedPodDump {
  uid: string;
  namespace: string;
  name: string;
  serviceAccount: string;
  ips: string[];
  netns: string;
}

export interface ConfigDump {
  /** Name of the node this agent serves. */
  node: string;
  /** Version of the state the controller pushed last. */
  version: string;
  generatedAt: string;
  workloads: Workload[];
  services: MeshService[];
  policies: AuthorizationRecord[];
  peerAuthentications: PeerAuthenticationRecord[];
  certificates: CertificateDump[];
  connections: ConnectionDump[];
  pods: ServedPodDump[];
}

/** The parts of the agent a dump reads (NodeAgent supplies them). */
export interface DumpSources {
  node: string;
  state: StateView;
  certificates: Pick<CertificateManager, 'list' | 'current'>;
  connections: Pick<ConnectionTracker, 'list'>;
  pods(): PodHandoffAdd[];
}

export function buildConfigDump(src: DumpSources, now = new Date()): ConfigDump {
  const byName = (a: { namespace: string; name: string }, b: { namespace: string; name: string }) =>
    a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name);
  return {
    node: src.node,
    version: src.state.version,
    generatedAt: now.toISOString(),
    workloads: [...src.state.workloads()].sort(byName),
    services: [...src.state.services()].sort(byName),
    policies: src.state.authorizations(),
    peerAuthentications: src.state.peerAuthentications(),
    certificates: certificates(src.certificates),
    connections: src.connections.list().sort((a, b) => a.id - b.id).map((c) => ({ ...c, startedAt: c.startedAt.toISOString() })),
    pods: src.pods().map((p) => ({ uid: p.uid, namespace: p.namespace, name: p.name, serviceAccount: p.serviceAccount, ips: p.ips, netns: p.netnsPath })).sort(byName),
  };
}

function certificates(certs: DumpSources['certificates']): CertificateDump[] {
  return certs.list().map((s) => {
    const creds = certs.current(s.identity);
    return {
      identity: s.identity,
      state: s.state,
      serial: s.serial,
      notBefore: s.notBefore?.toISOString(),
      notAfter: s.notAfter?.toISOString(),
      lastError: s.lastError,
      nextAttemptAt: s.nextAttemptAt?.toISOString(),
      chain: creds ? [...chainOf(creds.certChainPem, 'Intermediate').slice(1), ...chainOf(creds.rootsPem, 'Root')] : [],
    };
  });
}

/** Every certificate of a PEM bundle, described (an unparsable one is skipped: the dump must not fail). */
function chainOf(pem: string, type: ChainCertDump['type']): ChainCertDump[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  const out: ChainCertDump[] = [];
  for (const b of blocks) {
    try {
      const c = new X509Certificate(b);
      out.push({ type, subject: c.subject.replace(/\n/g, ', '), serial: c.serialNumber, notBefore: c.validFromDate.toISOString(), notAfter: c.validToDate.toISOString() });
    } catch { /* skipped */ }
  }
  return out;
}
