/**
 * `ambit local down` after the supervisor crashed (SIGKILL): everything recorded in the state dir is
 * still removed (pods' CNI DEL, processes, netns, bridge, iptables chain); `up` afterwards works.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { alive, ambitLocal, newInstance, sweepLeftovers } from './local-helpers.ts';

const INSTANCE = newInstance();
const STATE = `/run/ambit/${INSTANCE}`;
const ambit = (args: string[], input?: string) => ambitLocal(INSTANCE, args, input);
const sh = (cmd: string, args: string[]) => spawnSync(cmd, args, { encoding: 'utf8' }).stdout ?? '';
const ours = () => sh('ip', ['netns', 'list']).split('\n').map((l) => l.split(' ')[0]).filter((n) => n.startsWith(`${INSTANCE}-`));

const POD = `apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  containers: [{name: web, image: ambit/echo, ports: [{containerPort: 9090}]}]
`;

describe(`ambit local down after a crash (instance ${INSTANCE})`, () => {
  before(() => { sweepLeftovers(); });
  after(() => { ambit(['down']); });

  it('cleans up from the state dir when the supervisor is gone', () => {
    assert.equal(ambit(['up', '--no-mesh', '--nodes', '1']).code, 0);
    const a = ambit(['apply', '-f', '-'], POD);
    assert.equal(a.code, 0, a.stderr);
    const pod = (JSON.parse(ambit(['get', 'pods', '-o', 'json']).stdout) as { items: { status: { podIP: string } }[] }).items[0];
    const ipamDir = join(STATE, 'nodes', 'node-1', 'ipam', 'ambit-pods');
    assert.ok(existsSync(join(ipamDir, pod.status.podIP)), 'host-local reserved the pod IP');
    const netns = ours();
    assert.equal(netns.length, 2, `node + pod netns: ${netns.join(',')}`);
    const podPids = netns.flatMap((n) => sh('ip', ['netns', 'pids', n]).split(/\s+/).filter(Boolean).map(Number));
    assert.ok(podPids.length >= 1);

    const sup = JSON.parse(readFileSync(join(STATE, 'instance.json'), 'utf8')) as { pid: number };
    process.kill(sup.pid, 'SIGKILL');
    spawnSync('sleep', ['0.3']);
    assert.equal(ambit(['status']).code, 3, 'not running any more');

    const d = ambit(['down']);
    assert.equal(d.code, 0, d.stderr);
    assert.deepEqual(ours(), []);
    assert.ok(!sh('ip', ['-o', 'link']).includes(`${INSTANCE}0`));
    assert.ok(!sh('iptables-save', []).includes(`AMBIT-FWD-${INSTANCE}`));
    assert.equal(existsSync(STATE), false);
    for (const pid of podPids) assert.ok(!alive(pid), `pid ${pid} is gone`);
  });

  it('up works again afterwards', () => {
    assert.equal(ambit(['up', '--no-mesh', '--nodes', '1']).code, 0);
    assert.equal(ambit(['down']).code, 0);
  });
});
