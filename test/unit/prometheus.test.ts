/**
 * The Prometheus client in src/ztunnel/metrics: the text exposition (HELP/TYPE, label order,
 * escaping, values), counters and gauges with and without labels, collect callbacks, bad input, and
 * the process metrics read from the running process.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync } from 'node:fs';
import { CONTENT_TYPE, Counter, escapeHelp, escapeLabelValue, formatValue, Gauge, Registry } from '../../src/ztunnel/metrics/prometheus.ts';
import { registerProcessMetrics } from '../../src/ztunnel/metrics/process-metrics.ts';
import { isAmbitError } from '../../src/shared/errors.ts';

/** name{labels} -> value, from an exposition. */
function values(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

test('exposition: HELP and TYPE per family, a blank line between families, labels in declared order', async () => {
  const registry = new Registry();
  assert.equal(registry.contentType, 'text/plain; version=0.0.4; charset=utf-8');
  assert.equal(CONTENT_TYPE, registry.contentType);
  const plain = new Counter({ name: 'plain_total', help: 'A counter.', registry });
  const edges = new Counter({ name: 'edges_total', help: 'Edges.', labelNames: ['src', 'dst'], registry });
  new Counter({ name: 'unused_total', help: 'Never counted.', labelNames: ['x'], registry });
  new Gauge({ name: 'temp', help: 'A gauge.', registry });
  plain.inc();
  plain.inc(4);
  edges.inc({ dst: 'b', src: 'a' }); // key order of the object does not matter
  edges.inc({ src: 'a', dst: 'b' }, 2);
  edges.inc({ src: 'c', dst: 'b' }, 0); // a series from its first count, zero included
  assert.equal(await registry.metrics(), [
    '# HELP plain_total A counter.', '# TYPE plain_total counter', 'plain_total 5', '',
    '# HELP edges_total Edges.', '# TYPE edges_total counter', 'edges_total{src="a",dst="b"} 3', 'edges_total{src="c",dst="b"} 0', '',
    '# HELP unused_total Never counted.', '# TYPE unused_total counter', '',
    '# HELP temp A gauge.', '# TYPE temp gauge', 'temp 0', '',
  ].join('\n'));
  assert.deepEqual(registry.get('edges_total')?.samples(), [{ labels: { src: 'a', dst: 'b' }, value: 3 }, { labels: { src: 'c', dst: 'b' }, value: 0 }]);
  assert.equal(registry.get('nope'), undefined);
  assert.equal(await new Registry().metrics(), '');
});

test('escaping: label values (backslash, quote, newline) and HELP (backslash, newline); special values', async () => {
  assert.equal(escapeLabelValue('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
  assert.equal(escapeHelp('x\\y\nz "q"'), 'x\\\\y\\nz "q"', 'quotes stay in HELP');
  assert.deepEqual([NaN, Infinity, -Infinity, 0, 1.5, 1e21, -3].map(formatValue), ['NaN', '+Inf', '-Inf', '0', '1.5', '1e+21', '-3']);
  const registry = new Registry();
  const c = new Counter({ name: 'odd_total', help: 'line one\nback\\slash', labelNames: ['v'], registry });
  c.inc({ v: 'say "hi"\\\n' });
  const g = new Gauge({ name: 'g', help: 'g', registry });
  g.set(-Infinity);
  assert.equal(await registry.metrics(),
    '# HELP odd_total line one\\nback\\\\slash\n# TYPE odd_total counter\nodd_total{v="say \\"hi\\"\\\\\\n"} 1\n\n# HELP g g\n# TYPE g gauge\ng -Inf\n');
});

test('counters: one series per label set, found by value (not by object), distinct sets never merge', () => {
  const c = new Counter({ name: 'sets_total', help: 'x', labelNames: ['a', 'b'] });
  const labels = { a: 'x', b: 'y' };
  for (let i = 0; i < 1000; i++) c.inc(labels);
  c.inc({ a: 'x', b: 'y' }, 0.5);
  // Concatenations alike, and a pair of values whose 32-bit hashes collide (same bucket, two series).
  c.inc({ a: 'ab', b: 'c' });
  c.inc({ a: 'a', b: 'bc' }, 2);
  c.inc({ a: 'w673879', b: '' }, 3);
  c.inc({ a: 'w1180600', b: '' }, 4);
  c.inc({ a: 'w673879', b: '' }, 10);
  const got = Object.fromEntries(c.samples().map((s) => [`${s.labels.a}|${s.labels.b}`, s.value]));
  assert.deepEqual(got, { 'x|y': 1000.5, 'ab|c': 1, 'a|bc': 2, 'w673879|': 13, 'w1180600|': 4 });
  labels.a = 'changed';
  assert.equal(c.samples()[0].labels.a, 'x', 'the series keeps its own copy of the labels');
});

test('gauges: set with and without labels; collect callbacks (sync and async) run before every render', async () => {
  const registry = new Registry();
  let n = 0;
  new Gauge({ name: 'calls', help: 'x', registry, collect: (g) => g.set(++n) });
  new Gauge({
    name: 'later', help: 'x', registry,
    collect: (g) => new Promise<void>((resolve) => setTimeout(() => { g.set(n * 10); resolve(); }, 5)),
  });
  const byKind = new Gauge({ name: 'by_kind', help: 'x', labelNames: ['kind'], registry });
  byKind.set({ kind: 'a' }, 1);
  byKind.set({ kind: 'a' }, -2.5);
  byKind.set({ kind: 'b' }, 7);
  let v = values(await registry.metrics());
  assert.deepEqual([v.get('calls'), v.get('later'), v.get('by_kind{kind="a"}'), v.get('by_kind{kind="b"}')], [1, 10, -2.5, 7]);
  v = values(await registry.metrics());
  assert.deepEqual([v.get('calls'), v.get('later')], [2, 20]);
  const counted = new Counter({ name: 'pulled_total', help: 'x', registry, collect: (c) => c.inc(3) });
  await registry.metrics();
  assert.equal(counted.samples()[0].value, 3);
});

test('bad input: names, labels, values and duplicates are refused with a code naming the field', () => {
  const code = (c: string, re: RegExp) => (e: unknown) => isAmbitError(e, c) && re.test(e.message);
  assert.throws(() => new Counter({ name: 'bad-name', help: 'x' }), code('METRICS_BAD_NAME', /"bad-name"/));
  assert.throws(() => new Counter({ name: 'ok', help: 'x', labelNames: ['__reserved'] }), code('METRICS_BAD_NAME', /__reserved/));
  assert.throws(() => new Counter({ name: 'ok', help: 'x', labelNames: ['a:b'] }), code('METRICS_BAD_NAME', /"a:b"/));
  assert.throws(() => new Counter({ name: 'ok', help: 'x', labelNames: ['a', 'a'] }), code('METRICS_BAD_NAME', /repeat/));
  const c = new Counter({ name: 'c_total', help: 'x', labelNames: ['a'] });
  assert.throws(() => c.inc(), code('METRICS_BAD_LABELS', /c_total has labels/));
  assert.throws(() => c.inc({} as { a: string }), code('METRICS_BAD_LABELS', /label a must be a string, got undefined/));
  assert.throws(() => c.inc({ a: 'x', b: 'y' } as { a: string }), code('METRICS_BAD_LABELS', /unknown label b/));
  assert.throws(() => c.inc({ a: 'x' }, -1), code('METRICS_BAD_VALUE', /c_total.*-1/));
  assert.throws(() => c.inc({ a: 'x' }, NaN), code('METRICS_BAD_VALUE', /NaN/));
  assert.throws(() => c.inc({ a: 'x' }, Infinity), code('METRICS_BAD_VALUE', /Infinity/));
  assert.deepEqual(c.samples(), [], 'refused counts leave no series behind');
  assert.throws(() => new Gauge({ name: 'g', help: 'x' }).set(undefined as unknown as number), code('METRICS_BAD_VALUE', /g: .*undefined/));
  const registry = new Registry();
  new Gauge({ name: 'twice', help: 'x', registry });
  assert.throws(() => new Counter({ name: 'twice', help: 'x', registry }), code('METRICS_DUPLICATE', /twice/));
});

test('process metrics: the process_* and nodejs_* families, numeric and true to the running process', async () => {
  const registry = new Registry();
  registerProcessMetrics(registry);
  const text = await registry.metrics();
  const v = values(text);
  const names = ['process_cpu_user_seconds_total', 'process_cpu_system_seconds_total', 'process_cpu_seconds_total', 'process_start_time_seconds',
    'process_resident_memory_bytes', 'process_virtual_memory_bytes', 'process_heap_bytes', 'process_open_fds', 'process_max_fds',
    'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_total_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_external_memory_bytes'];
  for (const n of names) {
    assert.ok(Number.isFinite(v.get(n)), `${n} is a number: ${v.get(n)}`);
    assert.ok(v.get(n)! >= 0, `${n} >= 0`);
    assert.match(text, new RegExp(`^# TYPE ${n} ${n.endsWith('_total') ? 'counter' : 'gauge'}$`, 'm'));
  }
  const [major] = process.versions.node.split('.');
  assert.equal(v.get(`nodejs_version_info{version="${process.version}",major="${major}",minor="${process.versions.node.split('.')[1]}",patch="${process.versions.node.split('.')[2]}"}`), 1);
  const rss = process.memoryUsage.rss();
  assert.ok(Math.abs(v.get('process_resident_memory_bytes')! - rss) < rss / 2, 'RSS is the process RSS');
  assert.ok(v.get('process_virtual_memory_bytes')! >= v.get('process_resident_memory_bytes')!);
  assert.ok(Math.abs(v.get('process_start_time_seconds')! - (Date.now() / 1000 - process.uptime())) < 2);
  assert.ok(v.get('process_max_fds')! >= v.get('process_open_fds')!);
  assert.ok(v.get('nodejs_heap_size_used_bytes')! <= v.get('nodejs_heap_size_total_bytes')!);
  assert.ok(v.get('nodejs_eventloop_lag_seconds')! < 1);

  // Live values: one more open file is one more fd; CPU work shows in the counters.
  const fds = v.get('process_open_fds')!;
  const fd = openSync('/proc/self/status', 'r');
  try {
    const end = Date.now() + 60;
    while (Date.now() < end) { /* spin for CPU time */ }
    const w = values(await registry.metrics());
    assert.equal(w.get('process_open_fds'), fds + 1);
    assert.ok(w.get('process_cpu_user_seconds_total')! > v.get('process_cpu_user_seconds_total')!, 'user CPU grew');
    assert.ok(w.get('process_cpu_seconds_total')! >= w.get('process_cpu_user_seconds_total')!);
  } finally {
    closeSync(fd);
  }
});
