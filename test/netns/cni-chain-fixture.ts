/**
 * What the chained-CNI tests share: a node netns and a pod netns, a temporary object store that
 * says the pod is in an enrolled namespace, and a real hand-off server recording ADDs and DELs.
 * Registers its own before/after hooks in the calling describe block.
 */
import { before, after } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PodHandoffServer } from '../../src/ztunnel/pod-handoff-server.ts';
import type { PodHandoffAdd } from '../../src/api/pod-handoff.ts';
import { closeFd } from '../../src/native/index.ts';
import { shortId, netnsAdd, netnsDel, tempStore, namespaceObj, podObj } from './cni-helpers.ts';
import type { TempStore } from './cni-helpers.ts';

export interface ChainFixture {
  readonly id: string;
  readonly nodeNs: string;
  readonly podNs: string;
  readonly adds: PodHandoffAdd[];
  readonly dels: string[];
  /** Set in before(): */
  podPath: string;
  store: TempStore;
  /** Temp dir holding the hand-off socket (ztunnel.sock) and whatever the test writes. */
  dir: string;
}

export function chainFixture(tag: string): ChainFixture {
  const id = shortId();
  const f = { id, nodeNs: `ambt-${tag}n${id}`, podNs: `ambt-${tag}p${id}`, adds: [], dels: [], podPath: '', dir: '' } as unknown as ChainFixture;
  let agent: PodHandoffServer | undefined;
  before(async () => {
    netnsAdd(f.nodeNs);
    f.podPath = netnsAdd(f.podNs);
    f.store = tempStore();
    f.dir = mkdtempSync(join(tmpdir(), `ambt-${tag}-`));
    await f.store.store.put(namespaceObj('mesh', { 'istio.io/dataplane-mode': 'ambient' }) as any);
    await f.store.store.put(podObj('mesh', 'web', `uid-${id}`, { sa: 'web' }) as any);
    agent = new PodHandoffServer({
      socketPath: join(f.dir, 'ztunnel.sock'),
      onAdd: async (p) => { f.adds.push(p); closeFd(p.netnsFd); },
      onDel: async (uid) => { f.dels.push(uid); },
    });
    await agent.start();
  });
  after(async () => {
    await agent?.close();
    netnsDel(f.podNs);
    netnsDel(f.nodeNs);
    f.store?.cleanup();
    if (f.dir) rmSync(f.dir, { recursive: true, force: true });
  });
  return f;
}
