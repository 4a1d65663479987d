/**
 * Moves bytes both ways between the downstream (client side) and upstream streams, with TCP
 * half-close carried across (a FIN one way ends only that direction), byte counts on the
 * connection record, and the record closed exactly once when both sides are gone.
 */
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import type { ConnectionRecord } from './connections.ts';
import { relayIntoStream } from './read-regions.ts';
import type { InPlaceSink } from './read-regions.ts';

/** A/B measurement switches: AMBIT_RELAY_COPY=1 pipes plain -> HBONE, AMBIT_RELAY_CORK=0 writes every piece at once. */
const IN_PLACE = process.env.AMBIT_RELAY_COPY !== '1';
const CORK = process.env.AMBIT_RELAY_CORK !== '0';

export function pipeBoth(down: Duplex, up: Duplex, rec: ConnectionRecord): void {
  // A FIN from one peer must not end our write side toward it (the other peer may still talk).
  if (down instanceof net.Socket) down.allowHalfOpen = true;
  if (up instanceof net.Socket) up.allowHalfOpen = true;
  let firstError: unknown;
  let pending = 2;
  const done = (): void => {
    if (--pending === 0) rec.close(firstError);
  };
  const fail = (err: unknown, other: Duplex): void => {
    firstError ??= err;
    abort(other);
  };
  rec.onDestroy(() => {
    firstError ??= 'destroyed (drain timeout)';
    abort(down);
    abort(up);
  });
  countBytes(down, up, rec);
  down.on('error', (e) => fail(e, up));
  up.on('error', (e) => fail(e, down));
  const onClose = (s: Duplex, other: Duplex) => (): void => {
    // Closed before both directions finished cleanly: the other side must not linger.
    if (!s.readableEnded || !s.writableFinished) abortIfOpen(other);
    done();
  };
  for (const [s, other] of [[down, up], [up, down]] as const) {
    if (s.closed) queueMicrotask(onClose(s, other));
    else s.once('close', onClose(s, other));
  }
  // plain socket -> HBONE stream without copies where node lets us; a plain pipe otherwise
  if (!(IN_PLACE && down instanceof net.Socket && isInPlaceSink(up) && relayIntoStream(down, up))) pipeInto(down, up);
  if (!(up instanceof net.Socket && isInPlaceSink(down) && relayIntoStream(up, down))) pipeInto(up, down);
}

/**
 * Write buffer of the plain sockets an HBONE stream feeds (the app's connection on the inbound
 * side, the client's on the outbound side): with node's 16 KiB the cork below would batch only
 * two TLS records' worth before the pipe pauses.
 */
export const RELAY_WRITE_BUFFER = 256 * 1024;

/** A piece of DATA at least this big means bulk transfer (TLS records carry up to 16 KiB). */
const BULK_PIECE = 8 * 1024;

/**
 * Pipe into `dst`; when it is a plain socket fed by an HTTP/2 stream, the DATA pieces of one
 * event-loop turn (one per TLS record) are corked into one writev during bulk transfer: fewer,
 * larger sends through the pod's TCP stack. Small pieces (request/response traffic) go at once.
 */
function pipeInto(src: Duplex, dst: Duplex): void {
  if (CORK && dst instanceof net.Socket && !(src instanceof net.Socket)) {
    let corked = false;
    const uncork = (): void => {
      corked = false;
      dst.uncork();
    };
    // registered before pipe()'s own 'data' handler, so the cork is in place before its write
    src.on('data', (chunk: Buffer) => {
      if (corked || chunk.length < BULK_PIECE || dst.destroyed) return;
      corked = true;
      dst.cork();
      setImmediate(uncork);
    });
  }
  src.pipe(dst);
}

function isInPlaceSink(s: Duplex): s is Duplex & InPlaceSink {
  return typeof (s as unknown as Partial<InPlaceSink>).writeInPlace === 'function';
}

function abortIfOpen(s: Duplex): void {
  if (!s.destroyed) abort(s);
}

/** RST for sockets (the peer learns the connection failed), plain destroy for HTTP/2 streams (RST_STREAM). */
export function abort(s: Duplex): void {
  if (s.destroyed) return;
  if (s instanceof net.Socket && typeof s.resetAndDestroy === 'function' && s.readyState !== 'closed' && !s.connecting) {
    try {
      s.resetAndDestroy();
      return;
    } catch {
      // fall through
    }
  }
  s.destroy();
}

/**
 * Bytes src->dst and dst->src from the counters of whichever side is a plain socket (the app's or
 * the client's); only two HTTP/2 streams (never the case today) fall back to counting chunks.
 */
function countBytes(down: Duplex, up: Duplex, rec: ConnectionRecord): void {
  if (down instanceof net.Socket) {
    rec.countFrom(() => ({ sent: down.bytesRead, received: down.bytesWritten }));
  } else if (up instanceof net.Socket) {
    rec.countFrom(() => ({ sent: up.bytesWritten, received: up.bytesRead }));
  } else {
    down.on('data', (b: Buffer) => rec.addSent(b.length));
    up.on('data', (b: Buffer) => rec.addReceived(b.length));
  }
}
