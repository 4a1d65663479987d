import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { KubeObject } from './k8s.ts';

/**
 * A directory of Kubernetes objects, one JSON file each, as the local mesh keeps them (the stand-in
 * for the API server): `<root>/<kind lower-case>/<namespace or _>/<name>.json`. Objects include
 * their status (pod IP, phase) once the local runtime has set it. The controller's manifest source
 * and the CNI plugin read it; only the local runtime writes it. Writes are atomic (rename).
 */
export class ObjectStore {
  readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  pathOf(kind: string, namespace: string | undefined, name: string): string {
    return join(this.root, kind.toLowerCase(), namespace || '_', `${name}.json`);
  }

  async put(obj: KubeObject): Promise<void> {
    const file = this.pathOf(obj.kind, obj.metadata.namespace, obj.metadata.name);
    await mkdir(join(file, '..'), { recursive: true });
    // A unique temp name per write: two writes of one object may overlap.
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    await writeFile(tmp, JSON.stringify(obj, null, 2) + '\n');
    await rename(tmp, file);
  }

  async delete(kind: string, namespace: string | undefined, name: string): Promise<boolean> {
    const file = this.pathOf(kind, namespace, name);
    try {
      await readFile(file);
    } catch {
      return false;
    }
    await rm(file, { force: true });
    return true;
  }

  async get<T extends KubeObject = KubeObject>(kind: string, namespace: string | undefined, name: string): Promise<T | undefined> {
    try {
      return JSON.parse(await readFile(this.pathOf(kind, namespace, name), 'utf8')) as T;
    } catch {
      return undefined;
    }
  }

  /** Synchronous read, for short-lived processes such as the CNI plugin. */
  getSync<T extends KubeObject = KubeObject>(kind: string, namespace: string | undefined, name: string): T | undefined {
    try {
      return JSON.parse(readFileSync(this.pathOf(kind, namespace, name), 'utf8')) as T;
    } catch {
      return undefined;
    }
  }
}
