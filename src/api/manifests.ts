import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { KubeObject } from './k8s.ts';

/** A manifest that could not be read; `source` names the file (and document index). */
export interface ManifestError {
  source: string;
  message: string;
}

export interface ParsedManifests {
  objects: KubeObject[];
  errors: ManifestError[];
}

/**
 * Parse a YAML/JSON text holding one or more Kubernetes objects (`---` separated, or `kind: List`).
 * A bad document is reported and skipped; the good ones are still returned.
 */
export function parseManifests(text: string, source: string): ParsedManifests {
  const out: ParsedManifests = { objects: [], errors: [] };
  const docs = parseAllDocuments(text);
  docs.forEach((doc, i) => {
    const where = docs.length > 1 ? `${source}#${i + 1}` : source;
    if (doc.errors.length > 0) {
      out.errors.push({ source: where, message: `invalid YAML: ${doc.errors[0].message}` });
      return;
    }
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) return; // empty document
    collect(value, where, out);
  });
  return out;
}

function collect(value: unknown, where: string, out: ParsedManifests): void {
  const problem = checkObject(value);
  if (problem) {
    out.errors.push({ source: where, message: problem });
    return;
  }
  const obj = value as KubeObject;
  if (obj.kind === 'List' || obj.kind.endsWith('List')) {
    const items = (value as { items?: unknown }).items;
    if (!Array.isArray(items)) {
      out.errors.push({ source: where, message: `${obj.kind} has no items array` });
      return;
    }
    items.forEach((item, j) => collect(item, `${where}[${j}]`, out));
    return;
  }
  out.objects.push(obj);
}

function checkObject(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return 'expected a Kubernetes object (a mapping with apiVersion, kind, metadata)';
  }
  const v = value as Record<string, unknown>;
  if (typeof v.kind !== 'string' || v.kind === '') return 'missing field "kind"';
  if (v.kind === 'List' || v.kind.endsWith('List')) return undefined;
  if (typeof v.apiVersion !== 'string' || v.apiVersion === '') return `${v.kind}: missing field "apiVersion"`;
  const meta = v.metadata as Record<string, unknown> | undefined;
  if (typeof meta !== 'object' || meta === null) return `${v.kind}: missing field "metadata"`;
  if (typeof meta.name !== 'string' || meta.name === '') return `${v.kind}: missing field "metadata.name"`;
  return undefined;
}

const MANIFEST_FILE = /\.(ya?ml|json)$/i;

/** Read every manifest file under `dir` (recursively, sorted), or one file. */
export async function readManifestPath(path: string): Promise<ParsedManifests> {
  const out: ParsedManifests = { objects: [], errors: [] };
  for (const f of await readManifestFiles(path)) {
    out.objects.push(...f.objects);
    out.errors.push(...f.errors);
  }
  return out;
}

/** As readManifestPath, file by file (sorted), so a caller can treat each file's errors on its own. */
export async function readManifestFiles(path: string): Promise<Array<ParsedManifests & { file: string }>> {
  const info = await stat(path);
  const files = info.isDirectory() ? await listManifestFiles(path) : [path];
  const out: Array<ParsedManifests & { file: string }> = [];
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      out.push({ file, objects: [], errors: [{ source: file, message: `cannot read: ${(err as Error).message}` }] });
      continue;
    }
    out.push({ file, ...parseManifests(text, file) });
  }
  return out;
}

async function listManifestFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries
    .filter((e) => e.isFile() && MANIFEST_FILE.test(e.name) && !e.name.startsWith('.'))
    .map((e) => join(e.parentPath, e.name))
    .sort();
}
