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
