/**
 * The node agent's module graph stays free of gRPC libraries (@grpc/grpc-js, @grpc/proto-loader,
 * protobufjs: tens of MB of RSS); it speaks the control plane with its own client and codec. A child
 * process records every module resolved (ESM and require) while importing the agent.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';

const RECORD = `
import { registerHooks } from 'node:module';
const seen = [];
registerHooks({ resolve(spec, ctx, next) { const r = next(spec, ctx); seen.push(r.url); return r; } });
await import(process.env.AMBIT_IMPORT_UNDER_TEST);
process.stdout.write(JSON.stringify(seen));
process.exit(0);
`;

function modulesOf(file: string): string[] {
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', RECORD], {
    env: { ...process.env, AMBIT_IMPORT_UNDER_TEST: new URL(file, import.meta.url).href },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return JSON.parse(out) as string[];
}

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
