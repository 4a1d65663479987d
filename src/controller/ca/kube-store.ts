/**
 * The CA in a cluster: its signing material lives in a Secret of the controller's namespace, so a
 * restarted controller and a second replica sign under the same root (the first one to start
 * creates it; whoever loses the race to create it loads the winner's). The Secret holds the CA
 * directory's files under their names; the controller works from a copy in --ca-dir. The root
 * certificate is published in the ConfigMap ambit-root-cert, which node agents mount to check the
 * controller they talk to.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AmbitError, errorMessage } from '../../shared/errors.ts';
import { logger } from '../../shared/log.ts';
import { statusOf, type KubeClient } from '../sources/kube/client.ts';
import { backoffMs } from '../sources/kube/resources.ts';
import { CertificateAuthority } from './ca.ts';
import { CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, ROOT_CERT_FILE } from './root-store.ts';

const log = logger('ca.kube');

export const ROOT_CONFIGMAP = 'ambit-root-cert';
export const ROOT_CONFIGMAP_KEY = 'root-cert.pem';
const CA_FILES = [CA_CERT_FILE, CA_KEY_FILE, ROOT_CERT_FILE, CERT_CHAIN_FILE];
const LABELS = { 'app.kubernetes.io/part-of': 'ambit', 'app.kubernetes.io/component': 'controller' };

interface Secret { data?: Record<string, string> }

/** Retries what fails because the API server is away (not what it refuses). */
async function withRetry<T>(what: string, fn: () => Promise<T>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const s = statusOf(err);
      if ((s !== 0 && s < 500 && s !== 429) || Date.now() > deadline) throw err;
      log.warn(`${what}: retrying`, { error: errorMessage(err) });
      await new Promise((r) => setTimeout(r, backoffMs(attempt, 200, 5000)));
    }
  }
}

async function writeAtomically(file: string, text: string, mode: number): Promise<void> {
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, text, { mode });
  await rename(tmp, file);
}

/** Replaces the CA files in `dir` with those of the Secret (files it does not hold are removed). */
async function writeSecretFiles(dir: string, where: string, s: Secret): Promise<void> {
  const data = s.data ?? {};
  if (!data[CA_CERT_FILE] || !data[CA_KEY_FILE]) {
    throw new AmbitError('CA_BAD_SECRET', `CA Secret ${where} lacks ${CA_CERT_FILE} or ${CA_KEY_FILE}; delete it to have a new root made, or fill in both keys`);
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  for (const f of CA_FILES) {
    if (data[f]) await writeAtomically(join(dir, f), Buffer.from(data[f], 'base64').toString('utf8'), f === CA_KEY_FILE ? 0o600 : 0o644);
    else await rm(join(dir, f), { force: true });
  }
}

/**
 * Loads the CA from the Secret `namespace/name` into `dir`, or, when there is none, takes the CA in
 * `dir` (made there if empty) and stores it as that Secret. Then loads it.
 */
export async function loadCaFromSecret(client: KubeClient, o: { namespace: string; name: string; dir: string; trustDomain: string }): Promise<CertificateAuthority> {
  const where = `${o.namespace}/${o.name}`;
  const path = `/api/v1/namespaces/${encodeURIComponent(o.namespace)}/secrets`;
  const get = () => withRetry(`reading CA Secret ${where}`, async () => {
    try {
      return await client.request<Secret>('GET', `${path}/${encodeURIComponent(o.name)}`);
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw err;
    }
  });
  try {
    let secret = await get();
    if (!secret) {
      await CertificateAuthority.loadOrCreate(o.dir, { trustDomain: o.trustDomain });
      const data: Record<string, string> = {};
      for (const f of CA_FILES) {
        const text = await readFile(join(o.dir, f), 'utf8').catch(() => undefined);
        if (text !== undefined) data[f] = Buffer.from(text).toString('base64');
      }
      try {
        await withRetry(`creating CA Secret ${where}`, () => client.request('POST', path, {
          apiVersion: 'v1', kind: 'Secret', type: 'Opaque', metadata: { name: o.name, namespace: o.namespace, labels: LABELS }, data,
        }));
        log.info('stored the CA in its Secret', { secret: where });
      } catch (err) {
        if (statusOf(err) !== 409) throw err;
        log.info('another replica stored its CA first; using that one', { secret: where });
        secret = await get();
        if (!secret) throw new AmbitError('CA_SECRET', `CA Secret ${where} exists and does not (it was deleted meanwhile); restart the controller`);
      }
    }
    if (secret) {
      await writeSecretFiles(o.dir, where, secret);
      log.info('loaded the CA from its Secret', { secret: where });
    }
  } catch (err) {
    if (err instanceof AmbitError) throw err;
    throw new AmbitError('CA_SECRET', `cannot keep the CA in Secret ${where}: ${errorMessage(err)}; check that the namespace exists and the controller's Role allows get/create on it`, { cause: err });
  }
  return CertificateAuthority.loadOrCreate(o.dir, { trustDomain: o.trustDomain });
}

/**
 * Keeps the ConfigMap ambit-root-cert holding the root certificate: written at start (retried
 * while the API server is away), then checked every `checkMs` so a deleted or edited one comes back.
 */
export class RootCertPublisher {
  readonly namespace: string;
  #client: KubeClient;
  #rootsPem: string;
  #checkMs: number;
  #timer: NodeJS.Timeout | undefined;
  #attempt = 0;
  #stopped = false;
  #running: Promise<void> | undefined;
  published = 0;

  constructor(client: KubeClient, o: { namespace: string; rootsPem: string; checkMs?: number }) {
    this.#client = client;
    this.namespace = o.namespace;
    this.#rootsPem = o.rootsPem;
    this.#checkMs = o.checkMs ?? 60_000;
  }

  start(): void {
    this.#stopped = false;
    this.#tick();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
  }

  #tick(): void {
    if (this.#stopped) return;
    this.#running = this.#publish().then(
      () => { this.#attempt = 0; this.#later(this.#checkMs); },
      (err) => {
        log.warn('cannot publish the root certificate; retrying', { configMap: `${this.namespace}/${ROOT_CONFIGMAP}`, error: errorMessage(err) });
        this.#later(backoffMs(this.#attempt++, 500, 30_000));
      });
  }

  #later(ms: number): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => this.#tick(), ms);
  }

  async #publish(): Promise<void> {
    const path = `/api/v1/namespaces/${encodeURIComponent(this.namespace)}/configmaps`;
    const body = (resourceVersion?: string) => ({
      apiVersion: 'v1', kind: 'ConfigMap',
      metadata: { name: ROOT_CONFIGMAP, namespace: this.namespace, labels: LABELS, ...(resourceVersion ? { resourceVersion } : {}) },
      data: { [ROOT_CONFIGMAP_KEY]: this.#rootsPem },
    });
    let current: { metadata: { resourceVersion?: string }; data?: Record<string, string> } | undefined;
    try {
      current = await this.#client.request('GET', `${path}/${ROOT_CONFIGMAP}`);
    } catch (err) {
      if (statusOf(err) !== 404) throw err;
    }
    if (current?.data?.[ROOT_CONFIGMAP_KEY] === this.#rootsPem) return;
    if (current) await this.#client.request('PUT', `${path}/${ROOT_CONFIGMAP}`, body(current.metadata.resourceVersion));
    else await this.#client.request('POST', path, body());
    this.published++;
    log.info('published the root certificate', { configMap: `${this.namespace}/${ROOT_CONFIGMAP}` });
  }
}
