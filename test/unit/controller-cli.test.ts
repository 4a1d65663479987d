import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseListen, run } from '../../src/cli/controller.ts';

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

test('usage errors exit 2 and say what is wrong', async () => {
  let r = await quiet(['--manifests', '/tmp/x', '--ca-dir', '/tmp/y']);
  assert.equal(r.code, 2);
  assert.match(r.err, /missing --listen/);
  assert.match(r.err, /usage: ambit controller/);
  r = await quiet(['--manifests', '/tmp/x', '--ca-dir', '/tmp/y', '--listen', '1.2.3.4:1', '--bogus']);
  assert.equal(r.code, 2);
  assert.match(r.err, /bogus/);
  r = await quiet(['--manifests', '/tmp/x', '--ca-dir', '/tmp/y', '--listen', '1.2.3.4']);
  assert.equal(r.code, 2);
  assert.match(r.err, /not HOST:PORT/);
});

test('parseListen', () => {
  assert.deepEqual(parseListen('10.0.0.1:15012'), { host: '10.0.0.1', port: 15012 });
  assert.deepEqual(parseListen('[::1]:15012'), { host: '::1', port: 15012 });
  assert.deepEqual(parseListen('localhost:0'), { host: 'localhost', port: 0 });
  assert.equal(parseListen('10.0.0.1:70000'), undefined);
  assert.equal(parseListen('10.0.0.1'), undefined);
  assert.equal(parseListen('::1:80'), undefined);
});

test('--root-namespace must be a namespace name', async () => {
  const r = await quiet(['--manifests', '/tmp/x', '--ca-dir', '/tmp/y', '--listen', '127.0.0.1:0', '--root-namespace', 'Not_A_NS']);
  assert.equal(r.code, 2);
  assert.match(r.err, /--root-namespace "Not_A_NS" is not a namespace name/);
  assert.match(r.err, /--root-namespace NS/);
});

test('CA flags for clusters: only with a Kubernetes source, and well-formed', async () => {
  let r = await quiet(['--manifests', '/tmp/x', '--ca-dir', '/tmp/y', '--listen', '127.0.0.1:0', '--ca-secret', 'ambit-ca']);
  assert.equal(r.code, 2);
  assert.match(r.err, /--ca-secret needs --kubernetes or --kubeconfig/);
  r = await quiet(['--kubeconfig', '/nonexistent', '--ca-dir', '/tmp/y', '--listen', '127.0.0.1:0', '--agent-service-account', 'just-a-name']);
  assert.equal(r.code, 2);
  assert.match(r.err, /--agent-service-account "just-a-name" is neither NS\/NAME nor system:serviceaccount:NS:NAME/);
  r = await quiet(['--kubeconfig', '/nonexistent', '--ca-dir', '/tmp/y', '--listen', '127.0.0.1:0', '--ca-secret', 'Bad_Name']);
  assert.equal(r.code, 2);
  assert.match(r.err, /--ca-secret "Bad_Name" is not a Secret name/);
});
