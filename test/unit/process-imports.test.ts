/**
 * What the long-running processes load. The node agent's module graph stays free of gRPC libraries (@grpc/grpc-js, @grpc/proto-loader,
 * protobufjs: tens of MB of RSS); it speaks the control plane with its own client and codec. Nor does
 * it load node:http / node:https / node:http2 (about 10 MB): its HTTP endpoints use
 * src/shared/http-lite.ts and node:http2 is loaded only with AMBIT_HBONE_H2=node. A child process
 * records every module resolved (ESM and require) and the built-in modules loaded while importing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';

const RECORD = `
import { registerHooks } from 'node:module';
const seen = [];
registerHooks({ resolve(spec, ctx, next) { const r = next(spec, ctx); seen.push(r.url); return r; } });
await import(process.env.AMBIT_IMPORT_UNDER_TEST);
// Built-ins loaded by other built-ins never pass the resolve hook; node lists every one loaded.
const builtins = process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13));
// stdout to a pipe is asynchronous: exit only once the whole record is out (it can be ~150 KB).
process.stdout.write(JSON.stringify({ seen, builtins }), () => process.exit(0));
`;

function importRecord(file: string, env: Record<string, string> = {}): { seen: string[]; builtins: string[] } {
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', RECORD], {
    env: { ...process.env, ...env, AMBIT_IMPORT_UNDER_TEST: new URL(file, import.meta.url).href },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return JSON.parse(out) as { seen: string[]; builtins: string[] };
}

const modulesOf = (file: string): string[] => importRecord(file).seen;
const HTTP_BUILTINS = ['http', 'https', 'http2'];

test('importing the agent loads no @grpc/* or protobufjs module', () => {
  const seen = modulesOf('../../src/ztunnel/agent.ts');
  assert.ok(seen.some((u) => u.endsWith('/src/ztunnel/config/config-client.ts')), 'the recorder saw the config client');
  assert.deepEqual(seen.filter((u) => /@grpc|protobufjs/.test(u)), []);
});

test('the recorder does see them where they are used (the controller)', () => {
  const seen = modulesOf('../../src/controller/push/wire.ts');
  assert.ok(seen.some((u) => u.includes('@grpc/grpc-js')), seen.join('\n'));
  assert.ok(seen.some((u) => u.includes('@grpc/proto-loader')));
  assert.ok(seen.some((u) => u.includes('/protobufjs/')));
});

test('importing the agent loads neither node:http, node:https nor node:http2', () => {
  const { seen, builtins } = importRecord('../../src/ztunnel/agent.ts', { AMBIT_HBONE_H2: 'lean' });
  assert.ok(seen.some((u) => u.endsWith('/src/shared/http-lite.ts')), 'the recorder saw the lite HTTP server');
  assert.ok(builtins.includes('net') && builtins.includes('tls'), 'the recorder lists built-ins');
  assert.deepEqual(seen.filter((u) => /^node:(https?|http2)$/.test(u)), []);
  assert.deepEqual(builtins.filter((m) => HTTP_BUILTINS.includes(m) || m.startsWith('_http_')), []);
});

test('the built-in list does show node:http where it is loaded (the CLI admin client)', () => {
  const { builtins } = importRecord('../../src/cli/agent-admin.ts');
  assert.ok(builtins.includes('http'), builtins.join(' '));
});

test('a controller on a manifest directory does not load the Kubernetes client', () => {
  const seen = modulesOf('../../src/cli/controller.ts');
  assert.ok(seen.some((u) => u.endsWith('/src/controller/controller.ts')), 'the recorder saw the controller');
  assert.deepEqual(seen.filter((u) => u.includes('@kubernetes/client-node')), []);
  // ... which the Kubernetes source does load.
  assert.ok(modulesOf('../../src/controller/kube-wiring.ts').some((u) => u.includes('@kubernetes/client-node')));
});
