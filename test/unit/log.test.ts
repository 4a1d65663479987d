import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getLogFormat, logger, setLogFormat, setLogSink } from '../../src/shared/log.ts';

test('JSON log lines: a field named like a built-in key does not replace it', () => {
  const lines: string[] = [];
  const prevSink = setLogSink((l) => lines.push(l));
  const prevFormat = getLogFormat();
  setLogFormat('json');
  try {
    logger('agent.admin').info('logging changed', { level: 'debug', msg: 'x', other: 1 });
  } finally {
    setLogFormat(prevFormat);
    setLogSink(prevSink);
  }
  const j = JSON.parse(lines[0]) as Record<string, unknown>;
  assert.equal(j.level, 'info');
  assert.equal(j.msg, 'logging changed');
  assert.equal(j.component, 'agent.admin');
  assert.equal(j['field.level'], 'debug');
  assert.equal(j['field.msg'], 'x');
  assert.equal(j.other, 1);
});
