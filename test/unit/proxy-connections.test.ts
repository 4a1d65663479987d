import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConnectionTracker } from '../../src/ztunnel/proxy/connections.ts';
import type { ClosedConnection, ConnectionInfo } from '../../src/ztunnel/proxy/connections.ts';
import { AmbitError } from '../../src/shared/errors.ts';
import { setLogSink } from '../../src/shared/log.ts';

const fields = {
  direction: 'outbound' as const, podUid: 'p1', src: '10.0.0.1:4000', dst: '10.0.0.2:8080', hboneAddr: '10.0.0.2:15008',
  srcIdentity: 'spiffe://cluster.local/ns/a/sa/x', dstIdentity: 'spiffe://cluster.local/ns/b/sa/y',
  srcWorkload: 'a/x-1', dstWorkload: 'b/y-1', service: 'y.b.svc.cluster.local', protocol: 'HBONE' as const,
};

test('a record is opened once, closed exactly once, with bytes and one access-log line', () => {
  const lines: string[] = [];
  const prev = setLogSink((l) => lines.push(l));
  try {
    const t = new ConnectionTracker();
    const opened: ConnectionInfo[] = [];
    const closed: ClosedConnection[] = [];
    t.on('open', (c) => opened.push(c));
    t.on('close', (c) => closed.push(c));
    const r = t.open(fields);
    assert.equal(t.list().length, 1);
    assert.equal(t.recordsOf('p1').length, 1);
    assert.equal(t.recordsOf('p2').length, 0);
    r.addSent(10);
    r.addSent(5);
    r.addReceived(7);
    r.set({ policy: 'ns/allow-all', srcIdentity: undefined });
    r.close();
    r.close(new Error('late'));
    assert.equal(opened.length, 1);
    assert.equal(closed.length, 1);
    assert.equal(t.size, 0);
    const c = closed[0];
    assert.deepEqual([c.bytesSent, c.bytesReceived, c.error, c.policy, c.srcIdentity], [15, 7, undefined, 'ns/allow-all', fields.srcIdentity]);
    assert.ok(c.durationMs >= 0);
    const log = lines.filter((l) => l.includes('connection complete'));
    assert.equal(log.length, 1);
    for (const part of ['src.addr=10.0.0.1:4000', 'dst.addr=10.0.0.2:8080', 'dst.hbone_addr=10.0.0.2:15008', 'dst.service=y.b.svc.cluster.local',
      'src.identity=spiffe://cluster.local/ns/a/sa/x', 'dst.identity=spiffe://cluster.local/ns/b/sa/y', 'direction=outbound', 'bytes_sent=15', 'bytes_recv=7']) {
      assert.ok(log[0].includes(part), `${part} in ${log[0]}`);
    }
  } finally {
    setLogSink(prev);
  }
});

test('errors are recorded by code, destroy() runs the attached teardown, access log can be off', () => {
  const lines: string[] = [];
  const prev = setLogSink((l) => lines.push(l));
  try {
    const t = new ConnectionTracker({ accessLog: false });
    const closed: ClosedConnection[] = [];
    t.on('close', (c) => closed.push(c));
    const r = t.open(fields);
    let torn = 0;
    r.onDestroy(() => { torn++; r.close('cut'); });
    r.destroy();
    assert.equal(torn, 1);
    assert.equal(closed[0].error, 'cut');
    const r2 = t.open(fields);
    r2.close(new AmbitError('ZT_HBONE_503', 'peer answered 503'));
    assert.equal(closed[1].error, 'ZT_HBONE_503: peer answered 503');
    assert.equal(lines.filter((l) => l.includes('connection complete')).length, 0);
    assert.notEqual(closed[0].id, closed[1].id);
  } finally {
    setLogSink(prev);
  }
});

test('countFrom: byte counts read from a live source when listed and frozen at close', () => {
  const t = new ConnectionTracker({ accessLog: false });
  const closed: ClosedConnection[] = [];
  t.on('close', (c) => closed.push(c));
  const r = t.open(fields);
  let sent = 0;
  let received = 0;
  r.countFrom(() => ({ sent, received }));
  sent = 100;
  received = 3;
  assert.deepEqual(t.list().map((c) => [c.bytesSent, c.bytesReceived]), [[100, 3]]);
  sent = 250;
  r.close();
  sent = 999;
  assert.deepEqual([closed[0].bytesSent, closed[0].bytesReceived, r.info.bytesSent], [250, 3, 250]);
});
