/**
 * `node --import <this file>`: serves Ambit's .ts modules from the strip cache (ts-strip-cache.mjs)
 * so that Node's own TypeScript stripper is never loaded when the cache is warm.
 */
import { registerHooks } from 'node:module';
import { fileURLToPath } from 'node:url';
import { strippedSource } from './ts-strip-cache.mjs';

registerHooks({
  load(url, context, nextLoad) {
    if (!url.startsWith('file:') || !url.endsWith('.ts')) return nextLoad(url, context);
    return { format: 'module', source: strippedSource(fileURLToPath(url)), shortCircuit: true };
  },
});
