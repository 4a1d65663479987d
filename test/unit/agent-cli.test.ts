import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/cli/agent.ts';
import { agentUsername } from '../../src/controller/ca/token-review.ts';

async function quiet(argv: string[]): Promise<{ code: number; err: string }> {
  const write = process.stderr.write.bind(process.stderr);
  let err = '';
  process.stderr.write = ((chunk: string) => { err += chunk; return true; }) as typeof process.stderr.write;
  try {
    return { code: await run(argv), err };
  } finally {
    process.stderr.write = write;
  }
}

const base = ['--node', 'n1', '--controller', '127.0.0.1:1', '--run-dir', '/tmp/ambit-agent-cli-unused'];

test('agent credentials: a client certificate directory, or a token with the root certificate', async () => {
  let r = await quiet([...base, '--creds-dir', '/tmp/x', '--token-file', '/tmp/t', '--root-cert', '/tmp/r']);
  assert.equal(r.code, 2);
  assert.match(r.err, /--creds-dir and --token-file\/--root-cert exclude each other/);
  r = await quiet([...base, '--token-file', '/tmp/t']);
  assert.equal(r.code, 2);
  assert.match(r.err, /missing --root-cert/);
  r = await quiet(base);
  assert.equal(r.code, 2);
  assert.match(r.err, /missing --creds-dir/);

  const dir = mkdtempSync(join(tmpdir(), 'ambit-agent-cli-'));
  try {
    writeFileSync(join(dir, 'root.pem'), 'not a certificate');
    await assert.rejects(run([...base, '--token-file', join(dir, 'absent'), '--root-cert', join(dir, 'root.pem')]),
      (e: Error & { code?: string }) => e.code === 'ZT_BAD_CREDS' && /cannot read the agent token .*absent/.test(e.message));
    writeFileSync(join(dir, 'token'), 'x');
    await assert.rejects(run([...base, '--token-file', join(dir, 'token'), '--root-cert', join(dir, 'root.pem')]),
      (e: Error & { code?: string }) => e.code === 'ZT_BAD_CREDS' && /root\.pem holds no PEM certificate/.test(e.message));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('agent service account names', () => {
  assert.equal(agentUsername('ambit-system/ambit-agent'), 'system:serviceaccount:ambit-system:ambit-agent');
  assert.equal(agentUsername('system:serviceaccount:kube-system:ztunnel'), 'system:serviceaccount:kube-system:ztunnel');
  assert.equal(agentUsername('ambit-agent'), undefined);
  assert.equal(agentUsername('system:serviceaccount:ns'), undefined);
});
