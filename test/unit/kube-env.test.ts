/** `ambit local env` output: evaluated by a real shell, it sets KUBECONFIG and puts kubectl first. */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { kubeShellEnv } from '../../src/local/kube/env.ts';

it('kubeShellEnv survives quotes and spaces in paths', () => {
  const lines = kubeShellEnv({ kubeconfig: "/tmp/it's here/admin.kubeconfig", kubectlDir: '/opt/kube bin' });
  const r = spawnSync('sh', ['-c', `${lines}printf '%s\\n' "$KUBECONFIG" "\${PATH%%:*}"`], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin' } });
  assert.equal(r.stdout, "/tmp/it's here/admin.kubeconfig\n/opt/kube bin\n");
});
