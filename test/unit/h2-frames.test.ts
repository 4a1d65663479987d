import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  E_FRAME_SIZE_ERROR, E_PROTOCOL_ERROR, F_END_HEADERS, F_END_STREAM, F_PADDED, frame, FrameReader, goawayFrame, H2Error,
  headersFrames, pingFrame, rstStreamFrame, settingsFrame, T_CONTINUATION, T_DATA, T_GOAWAY, T_HEADERS, T_PING,
  T_RST_STREAM, T_SETTINGS, T_WINDOW_UPDATE, windowUpdateFrame,
} from '../../src/ztunnel/h2/frames.ts';
import type { FrameSink } from '../../src/ztunnel/h2/frames.ts';
import { ReceiveWindow, SendWindow } from '../../src/ztunnel/h2/flow-control.ts';

interface Got { type: number; flags: number; sid: number; payload: Buffer }

/** Collects frames; DATA pieces are joined back per frame (and the pieces counted). */
function collector(): { sink: FrameSink; frames: Got[]; dataPieces: number } {
  const frames: Got[] = [];
  let cur: { sid: number; parts: Buffer[] } | undefined;
  const out = {
    frames,
    dataPieces: 0,
    sink: {
      onFrame: (type: number, flags: number, sid: number, payload: Buffer) => frames.push({ type, flags, sid, payload: Buffer.from(payload) }),
      onDataStart: (sid: number) => { cur = { sid, parts: [] }; },
      onData: (_sid: number, chunk: Buffer) => { out.dataPieces++; cur!.parts.push(Buffer.from(chunk)); },
      onDataEnd: (sid: number, flags: number) => { frames.push({ type: T_DATA, flags, sid, payload: Buffer.concat(cur!.parts) }); cur = undefined; },
    },
  };
  return out;
}

function dataFrame(sid: number, payload: Buffer, flags = 0, pad = -1): Buffer {
  if (pad < 0) return frame(T_DATA, flags, sid, payload);
  return frame(T_DATA, flags | F_PADDED, sid, Buffer.concat([Buffer.of(pad), payload, Buffer.alloc(pad)]));
}

describe('FrameReader', () => {
  const wire = Buffer.concat([
    settingsFrame([[4, 4 << 20], [5, 1 << 20]]),
    pingFrame(Buffer.from('12345678'), false),
    dataFrame(1, Buffer.from('hello world'), F_END_STREAM),
    dataFrame(3, Buffer.from('padded!'), 0, 5),
    dataFrame(5, Buffer.alloc(0), F_END_STREAM),
    dataFrame(7, Buffer.alloc(0), 0, 3),
    headersFrames(1, Buffer.alloc(40, 7), false, 16),
    windowUpdateFrame(0, 1000),
    rstStreamFrame(3, 8),
    goawayFrame(9, 0, 'bye'),
  ]);

  const check = (frames: Got[]): void => {
    assert.deepEqual(frames.map((f) => [f.type, f.sid, f.flags]), [
      [T_SETTINGS, 0, 0], [T_PING, 0, 0], [T_DATA, 1, F_END_STREAM], [T_DATA, 3, F_PADDED], [T_DATA, 5, F_END_STREAM],
      [T_DATA, 7, F_PADDED], [T_HEADERS, 1, 0], [T_CONTINUATION, 1, 0], [T_CONTINUATION, 1, F_END_HEADERS],
      [T_WINDOW_UPDATE, 0, 0], [T_RST_STREAM, 3, 0], [T_GOAWAY, 0, 0],
    ]);
    assert.equal(frames[2].payload.toString(), 'hello world');
    assert.equal(frames[3].payload.toString(), 'padded!', 'padding is stripped');
    assert.equal(frames[5].payload.length, 0);
    assert.deepEqual(Buffer.concat(frames.slice(6, 9).map((f) => f.payload)), Buffer.alloc(40, 7));
    assert.equal(frames[9].payload.readUInt32BE(0), 1000);
    assert.equal(frames[10].payload.readUInt32BE(0), 8);
    assert.equal(frames[11].payload.subarray(8).toString(), 'bye');
  };

  it('parses a whole buffer', () => {
    const c = collector();
    new FrameReader(c.sink, 1 << 20).push(wire);
    check(c.frames);
  });

  it('parses the same bytes split at every possible point, and byte by byte', () => {
    for (let cut = 1; cut < wire.length; cut++) {
      const c = collector();
      const r = new FrameReader(c.sink, 1 << 20);
      r.push(wire.subarray(0, cut));
      r.push(wire.subarray(cut));
      check(c.frames);
    }
    const c = collector();
    const r = new FrameReader(c.sink, 1 << 20);
    for (let i = 0; i < wire.length; i++) r.push(wire.subarray(i, i + 1));
    check(c.frames);
  });

  it('streams a large DATA frame as views of the chunks, no reassembly', () => {
    const payload = Buffer.alloc(300_000, 1);
    const bytes = dataFrame(1, payload);
    const c = collector();
    const r = new FrameReader(c.sink, 1 << 20);
    for (let i = 0; i < bytes.length; i += 16_384) r.push(bytes.subarray(i, i + 16_384));
    assert.equal(c.frames.length, 1);
    assert.deepEqual(c.frames[0].payload, payload);
    assert.ok(c.dataPieces >= 18, `${c.dataPieces} pieces`);
  });

  it('hands out subarray views of the read chunk (zero copy)', () => {
    const bytes = dataFrame(1, Buffer.from('abc'));
    let view: Buffer | undefined;
    new FrameReader({ onFrame() {}, onDataStart() {}, onData: (_s, b) => { view = b; }, onDataEnd() {} }, 1 << 14).push(bytes);
    assert.equal(view!.buffer, bytes.buffer);
  });

  it('a frame over our max frame size is a FRAME_SIZE_ERROR', () => {
    const r = new FrameReader(collector().sink, 16_384);
    assert.throws(() => r.push(frame(T_PING, 0, 0, Buffer.alloc(16_385))), (e: unknown) => e instanceof H2Error && e.h2code === E_FRAME_SIZE_ERROR);
  });

  it('DATA padding longer than the frame is a PROTOCOL_ERROR', () => {
    const bad = Buffer.concat([frame(T_DATA, F_PADDED, 1, Buffer.of(10, 1, 2))]);
    assert.throws(() => new FrameReader(collector().sink, 16_384).push(bad), (e: unknown) => e instanceof H2Error && e.h2code === E_PROTOCOL_ERROR);
    const empty = frame(T_DATA, F_PADDED, 1);
    assert.throws(() => new FrameReader(collector().sink, 16_384).push(empty), (e: unknown) => e instanceof H2Error && e.h2code === E_PROTOCOL_ERROR);
  });

  it('stop() ends parsing mid-chunk', () => {
    const c = collector();
    const r = new FrameReader({ ...c.sink, onFrame: (...a) => { c.sink.onFrame(...a); r.stop(); } }, 1 << 20);
    r.push(wire);
    assert.equal(c.frames.length, 1);
  });
});

describe('frame encoders', () => {
  it('lay out the 9-byte header (length, type, flags, stream id without the R bit)', () => {
    const f = frame(T_DATA, 1, 0xffffffff, Buffer.from('xy'));
    assert.deepEqual([...f.subarray(0, 9)], [0, 0, 2, 0, 1, 0x7f, 0xff, 0xff, 0xff]);
    assert.deepEqual(windowUpdateFrame(3, 0x7fffffff).subarray(9), Buffer.of(0x7f, 0xff, 0xff, 0xff));
    assert.equal(goawayFrame(5, 2, 'x'.repeat(1000)).length, 9 + 8 + 256, 'debug data is capped');
    assert.equal(settingsFrame([[1, 2], [3, 4]]).length, 9 + 12);
  });
  it('headersFrames splits a block into HEADERS + CONTINUATION with END_STREAM on the first only', () => {
    const c = collector();
    new FrameReader(c.sink, 1 << 14).push(headersFrames(3, Buffer.alloc(33, 1), true, 16));
    assert.deepEqual(c.frames.map((f) => [f.type, f.flags, f.payload.length]), [
      [T_HEADERS, F_END_STREAM, 16], [T_CONTINUATION, 0, 16], [T_CONTINUATION, F_END_HEADERS, 1],
    ]);
    const one = collector();
    new FrameReader(one.sink, 1 << 14).push(headersFrames(3, Buffer.alloc(5), false, 16));
    assert.deepEqual(one.frames.map((f) => [f.type, f.flags]), [[T_HEADERS, F_END_HEADERS]]);
  });
});

describe('flow-control windows', () => {
  it('receive window: charges arrivals, refuses overruns, credits consumption in batches', () => {
    const w = new ReceiveWindow(1000);
    assert.equal(w.charge(600), true);
    assert.equal(w.charge(500), false, 'over the window');
    assert.equal(w.consume(100), 0, 'below the batch threshold');
    assert.equal(w.consume(400), 500, 'half the window consumed: credit all of it');
    assert.equal(w.open, 900);
    assert.equal(w.resize(4000), 3000);
    assert.equal(w.open, 3900);
    assert.equal(w.resize(10), 0, 'never shrinks');
  });
  it('send window: credits up to 2^31-1, adjusts (even below zero) on SETTINGS', () => {
    const w = new SendWindow(65_535);
    w.take(65_535);
    assert.equal(w.available, 0);
    assert.equal(w.adjust(-100), true);
    assert.equal(w.available, -100);
    assert.equal(w.credit(200), true);
    assert.equal(w.available, 100);
    assert.equal(w.credit(2 ** 31 - 1), false, 'overflow');
    assert.equal(w.available, 100);
  });
});
