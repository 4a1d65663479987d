/**
 * `ambit local up` with the mesh: controller + one agent per node + ambit-cni chained. The demo app:
 * a meshed client reaches the echo service (both pods, cross node and same node) with its own IP seen
 * by the server, in-pod redirection is installed only in the ambient namespace, and `down` removes
 * the agents and controller too. Debug: logs in /run/ambit/<instance>/logs.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ambitLocal, HTTP_GET, newInstance, ROOT, sweepLeftovers } from './local-helpers.ts';

const INSTANCE = newInstance();
const STATE = `/run/ambit/${INSTANCE}`;
const ambit = (args: string[], input?: string) => ambitLocal(INSTANCE, args, input);
const sh = (cmd: string, args: string[]) => spawnSync(cmd, args, { encoding: 'utf8' }).stdout ?? '';
const hint = () => `\n(instance ${INSTANCE}; logs in ${STATE}/logs)`;

interface PodJson { metadata: { name: string; namespace: string; annotations: Record<string, string> }; spec: { nodeName: string }; status: { podIP: string } }

describe(`ambit local with the mesh (instance ${INSTANCE})`, () => {
  before(() => {
    sweepLeftovers();
    ambit(['down']);
  });
  after(() => { ambit(['down']); });

  let pods: PodJson[] = [];
  it('starts the mesh and runs the demo app', () => {
    const up = ambit(['up', '--nodes', '2']);
    assert.equal(up.code, 0, up.stderr + hint());
    assert.match(up.stdout, /mesh on/);
    const a = ambit(['apply', '-f', join(ROOT, 'docs', 'examples', 'demo.yaml')]);
    assert.equal(a.code, 0, a.stdout + a.stderr + hint());
    pods = (JSON.parse(ambit(['get', 'pods', '-A', '-o', 'json']).stdout) as { items: PodJson[] }).items;
    assert.equal(pods.length, 4);
  });

  it('in-pod redirection only in the ambient namespace', () => {
    const rules = (p: PodJson) => {
      const ns = p.metadata.annotations['local.ambit.dev/netns'];
      return sh('ip', ['netns', 'exec', ns, 'iptables-save']) + sh('ip', ['netns', 'exec', ns, 'nft', 'list', 'ruleset']);
    };
    const demo = pods.find((p) => p.metadata.namespace === 'demo' && p.metadata.name === 'sleep')!;
    const legacy = pods.find((p) => p.metadata.namespace === 'legacy')!;
    assert.match(rules(demo), /15001/, 'meshed pod captures outbound');
    assert.doesNotMatch(rules(legacy), /15001/, 'legacy pod untouched');
  });

  it('meshed and legacy clients reach both echo pods through the ClusterIP, source IP preserved', () => {
    const vip = (JSON.parse(ambit(['get', 'svc', '-n', 'demo', '-o', 'json']).stdout) as { items: { spec: { clusterIP: string } }[] }).items[0].spec.clusterIP;
    const echo = pods.filter((p) => p.metadata.name.startsWith('echo-')).map((p) => p.metadata.name).sort();
    for (const client of ['demo/sleep', 'legacy/sleep']) {
      const ip = pods.find((p) => `${p.metadata.namespace}/${p.metadata.name}` === client)!.status.podIP;
      // The mesh's config reaches the agents shortly after the pods run: allow it a few seconds.
      const seen = new Set<string>();
      const deadline = Date.now() + 15_000;
      let last = '';
      while (seen.size < echo.length && Date.now() < deadline) {
        const r = ambit(['exec', client, '--', 'node', HTTP_GET, `http://${vip}/`, '--count', '10']);
        if (r.code !== 0) { last = r.stderr; spawnSync('sleep', ['0.2']); continue; }
        for (const l of r.stdout.trim().split('\n')) {
          const x = JSON.parse(l) as { pod: string; sourceIp: string };
          assert.equal(x.sourceIp, ip);
          seen.add(x.pod);
        }
      }
      assert.deepEqual([...seen].sort(), echo, `${client} reached both echo pods; last error: ${last}${hint()}`);
    }
  });

  it('down stops the agents and the controller and removes everything', () => {
    const r = ambit(['down']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sh('pgrep', ['-f', STATE]).trim(), '');
    assert.deepEqual(sh('ip', ['netns', 'list']).split('\n').filter((l) => l.startsWith(`${INSTANCE}-`)), []);
    assert.equal(existsSync(STATE), false);
  });
});
