/**
 * The controller process: a config source (manifest directory or Kubernetes API) -> translate ->
 * push server, plus the CA behind CreateCertificate. On Kubernetes, agents may authenticate with
 * projected ServiceAccount tokens (TokenReview), the CA can live in a Secret, and the root
 * certificate is published in the ConfigMap ambit-root-cert. Problems in the input are logged (once each) and skipped;
 * the rest of the config still flows. A policy whose new version is invalid keeps its last good
 * version in force; policy warnings (what L4 cannot enforce) are logged once each.
 */
import { DEFAULT_ROOT_NAMESPACE, DEFAULT_TRUST_DOMAIN } from '../api/constants.ts';
import type { AuthorizationRecord, PeerAuthenticationRecord } from '../api/policy.ts';
import { logger } from '../shared/log.ts';
import { CertificateAuthority } from './ca/ca.ts';
import type { RootCertPublisher } from './ca/kube-store.ts';
import type { TokenReviewerOptions } from './ca/token-review.ts';
import type { KubeSource } from './sources/kube/kube-source.ts';
import { PushServer } from './push/push-server.ts';
import { ManifestDirSource } from './sources/manifest-dir.ts';
import type { ClusterSnapshot, ConfigSource } from './sources/source.ts';
import { podPlacements } from './translate/placements.ts';
import { LastGoodPolicies } from './translate/last-good.ts';
import { translatePolicies, type PolicyWarning } from './translate/policies.ts';
import { translate, type Problem, type TranslateResult } from './translate/translate.ts';

const log = logger('controller');

export interface ControllerOptions {
  manifests: string;
  caDir: string;
  host: string;
  /** 0 = any free port */
  port: number;
  trustDomain?: string;
  /** Namespace of mesh-wide policies (default istio-system). */
  rootNamespace?: string;
  /** Use this source instead of the manifest directory (tests, the Kubernetes API later). */
  source?: ConfigSource;
  /** With a Kubernetes source (a KubeSource): the CA's place in the cluster and agent tokens. */
  kube?: KubeCaOptions;
}

export interface KubeCaOptions extends TokenReviewerOptions {
  /** The controller's namespace: CA Secret and root ConfigMap (default: the Lease's namespace). */
  namespace?: string;
  /** Keep the CA in this Secret (created from --ca-dir on first start, loaded after). */
  caSecret?: string;
  /** Publish the root in the ConfigMap ambit-root-cert (default true). */
  publishRoot?: boolean;
}

/** What the controller pushes, with what it found wrong or could not enforce. */
export interface ControllerConfig extends TranslateResult {
  authorizations: AuthorizationRecord[];
  peerAuthentications: PeerAuthenticationRecord[];
  warnings: PolicyWarning[];
}

export class Controller {
  readonly ca: CertificateAuthority;
  readonly push: PushServer;
  readonly source: ConfigSource;
  /** Kubernetes source only: keeps the ConfigMap ambit-root-cert. */
  rootPublisher: RootCertPublisher | undefined;
  #trustDomain: string;
  #rootNamespace: string;
  #last: ControllerConfig | undefined;
  #snapshot: ClusterSnapshot | undefined;
  #reported = new Set<string>();
  #warned = new Set<string>();
  #policies = new LastGoodPolicies();

  private constructor(ca: CertificateAuthority, push: PushServer, source: ConfigSource, trustDomain: string, rootNamespace: string) {
    this.ca = ca;
    this.push = push;
    this.source = source;
    this.#trustDomain = trustDomain;
    this.#rootNamespace = rootNamespace;
  }

  /** Load the CA, read the source, then serve. Resolves once serving (see `port`). */
  static async start(o: ControllerOptions): Promise<Controller> {
    const trustDomain = o.trustDomain ?? DEFAULT_TRUST_DOMAIN;
    const source = o.source ?? new ManifestDirSource(o.manifests);
    const kube = source.kind === 'kubernetes'
      ? await (await import('./kube-wiring.ts')).wireKube(source as KubeSource, o, trustDomain)
      : undefined;
    const ca = kube?.ca ?? await CertificateAuthority.loadOrCreate(o.caDir, { trustDomain });
    const refresh = source instanceof ManifestDirSource ? () => source.rescan() : undefined;
    const push = new PushServer({ ca, host: o.host, port: o.port, ...(kube ? kube.push : { refresh }) });
    const c = new Controller(ca, push, source, trustDomain, o.rootNamespace ?? DEFAULT_ROOT_NAMESPACE);
    c.rootPublisher = kube?.rootPublisher;
    // The first snapshot arrives inside source.start(), so agents never see an empty config first.
    await source.start((s) => c.#apply(s));
    try {
      await push.start();
    } catch (err) {
      await source.stop();
      throw err;
    }
    c.rootPublisher?.start();
    return c;
  }

  get port(): number { return this.push.port; }
  get trustDomain(): string { return this.#trustDomain; }
  get rootNamespace(): string { return this.#rootNamespace; }
  /** The latest translation (for the CLI / debugging). */
  get config(): ControllerConfig | undefined { return this.#last; }
  get snapshot(): ClusterSnapshot | undefined { return this.#snapshot; }

  async stop(): Promise<void> {
    await this.rootPublisher?.stop();
    await this.source.stop();
    await this.push.stop();
  }

  #apply(s: ClusterSnapshot): void {
    this.#snapshot = s;
    const mesh = translate(s, { trustDomain: this.#trustDomain });
    const policies = this.#policies.merge(translatePolicies(s.objects, { rootNamespace: this.#rootNamespace, trustDomain: this.#trustDomain }));
    const kept = new Set(policies.kept.map((k) => `${k.object}\0${k.field}\0${k.message}`));
    const result: ControllerConfig = {
      ...mesh,
      problems: [...mesh.problems, ...policies.problems],
      authorizations: policies.authorizations,
      peerAuthentications: policies.peerAuthentications,
      warnings: policies.warnings,
    };
    this.#reportProblems(result.problems, kept);
    this.#reportWarnings(result.warnings);
    this.#last = result;
    this.push.update(result, podPlacements(s.objects));
    log.info('config updated', {
      revision: s.revision, workloads: result.workloads.length, services: result.services.length,
      authorizations: result.authorizations.length, peerAuthentications: result.peerAuthentications.length,
      problems: result.problems.length, sourceErrors: s.errors.length,
    });
  }

  /** `kept`: problems of objects whose previous good version stays in force. */
  #reportProblems(problems: Problem[], kept: Set<string>): void {
    const now = new Set<string>();
    for (const p of problems) {
      const k = `${p.object}\0${p.field}\0${p.message}`;
      now.add(k);
      if (this.#reported.has(k)) continue;
      if (kept.has(k)) log.warn('invalid object refused; its previous version stays in force', { object: p.object, field: p.field, error: p.message });
      else log.warn('invalid object skipped', { object: p.object, field: p.field, error: p.message });
    }
    this.#reported = now;
  }

  #reportWarnings(warnings: PolicyWarning[]): void {
    const now = new Set<string>();
    for (const w of warnings) {
      const k = `${w.object}\0${w.message}`;
      now.add(k);
      if (!this.#warned.has(k)) log.warn('policy not enforced as written', { object: w.object, warning: w.message });
    }
    this.#warned = now;
  }
}
