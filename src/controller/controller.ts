/**
 * The controller process: a config source (manifest directory for now) -> translate -> push server,
 * plus the CA behind CreateCertificate. Problems in the input are logged (once each) and skipped;
 * the rest of the config still flows.
 */
import { DEFAULT_TRUST_DOMAIN } from '../api/constants.ts';
import { logger } from '../shared/log.ts';
import { CertificateAuthority } from './ca/ca.ts';
import { PushServer } from './push/push-server.ts';
import { ManifestDirSource } from './sources/manifest-dir.ts';
import type { ClusterSnapshot, ConfigSource } from './sources/source.ts';
import { podPlacements } from './translate/placements.ts';
import { translate, type Problem, type TranslateResult } from './translate/translate.ts';

const log = logger('controller');

export interface ControllerOptions {
  manifests: string;
  caDir: string;
  host: string;
  /** 0 = any free port */
  port: number;
  trustDomain?: string;
  /** Use this source instead of the manifest directory (tests, the Kubernetes API later). */
  source?: ConfigSource;
}

export class Controller {
  readonly ca: CertificateAuthority;
  readonly push: PushServer;
  readonly source: ConfigSource;
  #trustDomain: string;
  #last: TranslateResult | undefined;
  #snapshot: ClusterSnapshot | undefined;
  #reported = new Set<string>();

  private constructor(ca: CertificateAuthority, push: PushServer, source: ConfigSource, trustDomain: string) {
    this.ca = ca;
    this.push = push;
    this.source = source;
    this.#trustDomain = trustDomain;
  }

  /** Load the CA, read the source, then serve. Resolves once serving (see `port`). */
  static async start(o: ControllerOptions): Promise<Controller> {
    const trustDomain = o.trustDomain ?? DEFAULT_TRUST_DOMAIN;
    const ca = await CertificateAuthority.loadOrCreate(o.caDir, { trustDomain });
    const source = o.source ?? new ManifestDirSource(o.manifests);
    const refresh = source instanceof ManifestDirSource ? () => source.rescan() : undefined;
    const push = new PushServer({ ca, host: o.host, port: o.port, refresh });
    const c = new Controller(ca, push, source, trustDomain);
    // The first snapshot arrives inside source.start(), so agents never see an empty config first.
    await source.start((s) => c.#apply(s));
    try {
      await push.start();
    } catch (err) {
      await source.stop();
      throw err;
    }
    return c;
  }

  get port(): number { return this.push.port; }
  get trustDomain(): string { return this.#trustDomain; }
  /** The latest translation (for the CLI / debugging). */
  get config(): TranslateResult | undefined { return this.#last; }
  get snapshot(): ClusterSnapshot | undefined { return this.#snapshot; }

  async stop(): Promise<void> {
    await this.source.stop();
    await this.push.stop();
  }

  #apply(s: ClusterSnapshot): void {
    this.#snapshot = s;
    const result = translate(s, { trustDomain: this.#trustDomain });
    this.#reportProblems(result.problems);
    this.#last = result;
    this.push.update(result, podPlacements(s.objects));
    log.info('config updated', { revision: s.revision, workloads: result.workloads.length, services: result.services.length, problems: result.problems.length, sourceErrors: s.errors.length });
  }

  #reportProblems(problems: Problem[]): void {
    const now = new Set<string>();
    for (const p of problems) {
      const k = `${p.object}\0${p.field}\0${p.message}`;
      now.add(k);
      if (!this.#reported.has(k)) log.warn('invalid object skipped', { object: p.object, field: p.field, error: p.message });
    }
    this.#reported = now;
  }
}
