import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManifestDirSource } from '../../src/controller/sources/manifest-dir.ts';
import type { ClusterSnapshot } from '../../src/controller/sources/source.ts';
import { ObjectStore } from '../../src/api/object-store.ts';
import { setLogSink } from '../../src/shared/log.ts';
import { isAmbitError } from '../../src/shared/errors.ts';

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('manifest dir: first snapshot on start, one per real change, bad files reported once', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ambit-src-'));
  const lines: string[] = [];
  const prev = setLogSink((l) => lines.push(l));
  const source = new ManifestDirSource(dir, { rescanMs: 40 });
  try {
    const store = new ObjectStore(dir);
    await store.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'demo' } });
    const snaps: ClusterSnapshot[] = [];
    await source.start((s) => snaps.push(s));
    assert.equal(snaps.length, 1, 'first snapshot before start() resolves');
    assert.deepEqual(snaps[0].objects.map((o) => o.metadata.name), ['demo']);

    // A new object in a new sub-directory (the object store layout) is picked up.
    await store.put({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'demo' } });
    await until(() => snaps.length === 2);
    assert.equal(snaps[1].revision, 2);
    // Rewriting the same content produces no snapshot, even across periodic rescans.
    await store.put({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'demo' } });
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(snaps.length, 2);

    await mkdir(join(dir, 'extra'), { recursive: true });
    await writeFile(join(dir, 'extra', '.bad.tmp'), 'kind: Service\n');
    await rename(join(dir, 'extra', '.bad.tmp'), join(dir, 'extra', 'bad.yaml'));
    await until(() => snaps.length === 3);
    assert.deepEqual(snaps[2].objects.length, 2, 'good objects still there');
    assert.match(snaps[2].errors[0].message, /apiVersion/);
    await new Promise((r) => setTimeout(r, 200)); // several periodic rescans
    assert.equal(lines.filter((l) => l.includes('bad manifest skipped')).length, 1, 'warned once');
    await store.delete('Pod', 'demo', 'p');
    await until(() => snaps.length === 4).catch((e) => { throw new Error(`${e.message}: ${JSON.stringify(snaps.map((x) => [x.revision, x.objects.map((o) => o.metadata.name), x.errors]))}`); });
    assert.deepEqual(snaps[3].objects.map((o) => o.kind), ['Namespace']);
  } finally {
    setLogSink(prev);
    await source.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test('manifest dir: a missing directory is a clear error', async () => {
  const source = new ManifestDirSource('/nonexistent/ambit-manifests');
  await assert.rejects(source.start(() => {}), (e: unknown) => isAmbitError(e, 'CONTROLLER_BAD_MANIFESTS') && /nonexistent/.test(e.message));
});

test('manifest dir: a file that stops parsing keeps its last good objects until fixed or deleted', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ambit-src-'));
  const prev = setLogSink(() => {});
  const source = new ManifestDirSource(dir, { rescanMs: 40 });
  const file = join(dir, 'policies.yaml');
  const policy = (name: string) => `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: ${name}, namespace: demo }\nspec: {}\n`;
  const write = async (text: string) => {
    await writeFile(`${file}.tmp`, text);
    await rename(`${file}.tmp`, file);
  };
  try {
    await write(`${policy('allow-nothing')}---\n${policy('other')}`);
    const snaps: ClusterSnapshot[] = [];
    await source.start((s) => snaps.push(s));
    const names = () => snaps[snaps.length - 1].objects.map((o) => o.metadata.name).sort();
    assert.deepEqual(names(), ['allow-nothing', 'other']);

    // A YAML syntax error in the file: both policies stay in force, the error says so.
    await write(`${policy('allow-nothing')}---\nkind: [unclosed\n`);
    await until(() => snaps[snaps.length - 1].errors.length > 0);
    assert.deepEqual(names(), ['allow-nothing', 'other']);
    assert.match(snaps[snaps.length - 1].errors[0].message, /keeping 1 object\(s\) from this file's last good version/);

    // Fixed with one policy removed: now it is really gone.
    await write(policy('allow-nothing'));
    await until(() => snaps[snaps.length - 1].errors.length === 0);
    assert.deepEqual(names(), ['allow-nothing']);

    // Broken again, then deleted: nothing is kept for a file that no longer exists.
    await write('kind: [unclosed\n');
    await until(() => snaps[snaps.length - 1].errors.length > 0);
    assert.deepEqual(names(), ['allow-nothing']);
    await rm(file);
    await until(() => snaps[snaps.length - 1].objects.length === 0);
    assert.equal(snaps[snaps.length - 1].errors.length, 0);
  } finally {
    setLogSink(prev);
    await source.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
