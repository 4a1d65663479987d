/**
 * Writes controller/crds/*.yaml from the schemas in src/api/crds/ (run with the project's Node:
 * node_modules/.bin/node scripts/gen-crds.ts). Files of CRDs no longer defined are removed.
 */
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { renderCrdFiles } from '../src/api/crds/render.ts';

const dir = fileURLToPath(new URL('../controller/crds/', import.meta.url));
mkdirSync(dir, { recursive: true });
const files = renderCrdFiles();
for (const f of readdirSync(dir)) if (f.endsWith('.yaml') && !files.has(f)) rmSync(dir + f);
for (const [name, text] of files) writeFileSync(dir + name, text);
process.stdout.write(`wrote ${files.size} files to ${dir}\n`);
