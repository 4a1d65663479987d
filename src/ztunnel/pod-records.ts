import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { PodHandoffAdd } from '../api/pod-handoff.ts';
import { logger } from '../shared/log.ts';

const log = logger('agent.pods');

/**
 * The pods this node's agent serves, kept on disk so a restarted agent takes them back at once
 * (the CNI plugin runs only when a pod starts). One JSON file per pod uid under `<runDir>/pods`.
 */
export class PodRecords {
  readonly #dir: string;

  constructor(runDir: string) {
    this.#dir = join(runDir, 'pods');
  }

  async save(pod: PodHandoffAdd): Promise<void> {
    await mkdir(this.#dir, { recursive: true });
    const file = this.#file(pod.uid);
    await writeFile(`${file}.tmp`, JSON.stringify(pod) + '\n', { mode: 0o600 });
    await rename(`${file}.tmp`, file);
  }

  async remove(uid: string): Promise<void> {
    await rm(this.#file(uid), { force: true });
  }

  /** Every recorded pod; unreadable records are logged and dropped. */
  async load(): Promise<PodHandoffAdd[]> {
    let names: string[];
    try {
      names = await readdir(this.#dir);
    } catch {
      return [];
    }
    const pods: PodHandoffAdd[] = [];
    for (const name of names.filter((n) => n.endsWith('.json'))) {
      try {
        pods.push(JSON.parse(await readFile(join(this.#dir, name), 'utf8')) as PodHandoffAdd);
      } catch (err) {
        log.warn('dropping unreadable pod record', { file: name, error: (err as Error).message });
        await rm(join(this.#dir, name), { force: true });
      }
    }
    return pods;
  }

  #file(uid: string): string {
    return join(this.#dir, `${uid.replace(/[^A-Za-z0-9_.-]/g, '_')}.json`);
  }
}
