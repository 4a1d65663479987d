/**
 * The type-strip cache (src/boot/ts-strip-cache.mjs): with it, an Ambit process whose sources are
 * cached never loads Node's TypeScript stripper (amaro, ~20-30 MB of RSS); entries follow the
 * source's content, so an edited file is stripped again; an unwritable cache only costs speed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..', '..');
const HOOK = join(ROOT, 'src', 'boot', 'register-ts-strip-cache.mjs');

/** Imports `file` in a fresh node with the hook; returns what it printed and whether amaro loaded. */
function importWithHook(file: string, cacheDir: string): { out: string; amaro: boolean } {
  const script = `await import(${JSON.stringify(file)});
process.stdout.write(JSON.stringify({ amaro: process.moduleLoadList.some((m) => m.includes('amaro')) }));`;
  const out = execFileSync(process.execPath, ['--import', HOOK, '--input-type=module', '-e', script], {
    env: { ...process.env, AMBIT_TS_CACHE: cacheDir }, encoding: 'utf8', timeout: 60_000,
  });
  const at = out.lastIndexOf('{"amaro"');
  return { out: out.slice(0, at), amaro: (JSON.parse(out.slice(at)) as { amaro: boolean }).amaro };
}

test('a warm cache keeps the TypeScript stripper out of the node agent', (t) => {
  const cache = mkdtempSync(join(tmpdir(), 'ambit-strip-cache-'));
  t.after(() => rmSync(cache, { recursive: true, force: true }));
  const agent = join(ROOT, 'src', 'ztunnel', 'agent.ts');
  assert.equal(importWithHook(agent, cache).amaro, true, 'a cold cache strips (the check can see amaro)');
  assert.ok(readdirSync(cache).length > 50, 'the agent module graph was cached');
  assert.equal(importWithHook(agent, cache).amaro, false, 'warm: no stripper loaded');
});

test('an edited source is stripped again; an unwritable cache still runs', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ambit-strip-src-'));
  const cache = join(dir, 'cache');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const src = join(dir, 'mod.ts');
  writeFileSync(src, `const n: number = 1;\nconsole.log('v' + n);\n`);
  assert.equal(importWithHook(src, cache).out.trim(), 'v1');
  writeFileSync(src, `const n: number = 2;\nconsole.log('v' + n);\n`);
  const again = importWithHook(src, cache);
  assert.equal(again.out.trim(), 'v2', 'not a stale entry');
  assert.equal(readdirSync(cache).length, 2, 'one entry per content');
  // An install where nothing can be written (the cache dir would sit below a regular file): it still loads.
  writeFileSync(src, `const n: number = 3;\nconsole.log('v' + n);\n`);
  assert.equal(importWithHook(src, join(src, 'not-a-dir')).out.trim(), 'v3');
});
