/**
 * Reusable read buffers for the plain-socket -> HBONE direction. Node normally allocates a fresh
 * 64 KiB buffer for every read, and our HTTP/2 layer then copies it behind a frame header before
 * node's TLS layer copies it once more: at gigabits per second that is most of the garbage the
 * agent makes. Here a socket reads into a region that keeps FRAME_HEADER_LEN bytes free in front,
 * the frame header is written into that room, and the region goes back to the pool once the TLS
 * socket has consumed it (its write callback).
 */
import type * as net from 'node:net';
import { FRAME_HEADER_LEN } from '../h2/frames.ts';

/**
 * Two sizes. A connection holds its read region while it waits for data, so connections start
 * (and fall back, after a short read) on small regions; a read that fills its region moves the
 * connection to large ones. Large = 9 bytes of header room + a payload that makes the whole frame
 * exactly sixteen 16 KiB TLS records.
 */
export const LARGE_REGION = 256 * 1024;
export const SMALL_REGION = 4 * 1024;

export class RegionPool {
  readonly size: number;
  #free: Buffer[] = [];
  #maxFree: number;
  /** Regions handed out and not yet given back (metrics and tests). */
  outstanding = 0;

  /** `maxFree` bounds the idle memory kept for reuse. */
  constructor(size: number, maxFree: number) {
    this.size = size;
    this.#maxFree = maxFree;
  }

  take(): Buffer {
    this.outstanding++;
    // One buffer per region, no shared slabs: a long-lived connection must not pin others' memory.
    return this.#free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  give(region: Buffer): void {
    this.outstanding--;
    if (this.#free.length < this.#maxFree) this.#free.push(region);
  }

  get idle(): number { return this.#free.length; }
}

export interface RegionPools {
  small: RegionPool;
  large: RegionPool;
}

/** Idle regions kept for reuse: enough for a few bulk streams in flight; more are allocated and left to GC. */
export function regionPools(maxIdleSmall = 64, maxIdleLarge = 8): RegionPools {
  return {
    small: new RegionPool(SMALL_REGION, maxIdleSmall),
    large: new RegionPool(LARGE_REGION, maxIdleLarge),
  };
}

export const sharedRegions = regionPools();

/** Reads relayed without a copy / through a copy (window full or something queued ahead). */
export const relayStats = { inPlace: 0, copied: 0 };

/** The payload part of a region, where a socket reads (node's onread buffer), at most `max` bytes. */
export function payloadView(region: Buffer, max: number): Buffer {
  return region.subarray(FRAME_HEADER_LEN, FRAME_HEADER_LEN + Math.min(max, region.length - FRAME_HEADER_LEN));
}

/** Regions either pool still has out (tests). */
export function outstanding(p: RegionPools): number {
  return p.small.outstanding + p.large.outstanding;
}

type ReadCallback = (nread: number, buf: Uint8Array) => boolean;

/**
 * Switches a socket that has not started reading (accepted with pauseOnConnect, or created paused)
 * to node's user-buffer reads (`onread`), which node's public API offers only when connecting.
 * Returns false, leaving the socket untouched, when node does not expose what is needed or the
 * socket already read something.
 */
export function useReadBuffers(sock: net.Socket, next: () => Uint8Array, cb: ReadCallback): boolean {
  const handle = (sock as unknown as { _handle?: { reading?: boolean; useUserBuffer?: (b: Uint8Array) => void } })._handle;
  if (!handle || typeof handle.useUserBuffer !== 'function' || handle.reading || sock.readableLength > 0 || sock.destroyed) return false;
  const syms = new Map(Object.getOwnPropertySymbols(sock).map((s) => [s.description, s]));
  const kBuffer = syms.get('kBuffer');
  const kBufferCb = syms.get('kBufferCb');
  const kBufferGen = syms.get('kBufferGen');
  if (!kBuffer || !kBufferCb || !kBufferGen) return false;
  const own = sock as unknown as Record<symbol, unknown>;
  if (own[kBuffer] !== null || own[kBufferCb] !== null) return false;
  const first = next();
  own[kBuffer] = first;
  own[kBufferCb] = cb;
  own[kBufferGen] = next;
  handle.useUserBuffer(first);
  return true;
}

/** What relayIntoStream needs from an HTTP/2 stream (H2Stream implements it). */
export interface InPlaceSink {
  readonly destroyed: boolean;
  writeInPlace(region: Buffer, n: number, done: () => void): boolean;
  readonly sessionWritable: boolean;
  /** The largest DATA payload the peer takes in one frame now. */
  readonly maxInPlace: number;
  onWritable(cb: () => void): void;
  write(chunk: Buffer): boolean;
  end(): void;
  once(event: 'drain', cb: () => void): unknown;
}

/**
 * Moves what `sock` reads into `stream` without copying: each read lands in a pool region and
 * leaves as one DATA frame. When the stream cannot take a frame in place (flow-control windows,
 * something queued ahead), a copy goes through the stream's normal write path, which keeps order.
 * Reading pauses while the session's socket or the stream is full. The socket's EOF ends the
 * stream; errors and close are the caller's (pipeBoth). False when the socket cannot be switched
 * to pool reads (the caller pipes instead).
 */
export function relayIntoStream(sock: net.Socket, stream: InPlaceSink, pools: RegionPools = sharedRegions): boolean {
  let current: Buffer | undefined;
  let currentPool = pools.small;
  let currentView: Buffer | undefined;
  let paused = false;
  // the size class of the next region follows the last read: full -> large, short -> small
  let nextPool = pools.small;
  const next = (): Uint8Array => {
    currentPool = nextPool;
    current = currentPool.take();
    currentView = payloadView(current, stream.maxInPlace);
    return currentView;
  };
  const resume = (): void => {
    if (!paused || sock.destroyed) return;
    paused = false;
    sock.resume();
  };
  const onRead = (n: number): boolean => {
    const region = current!;
    const pool = currentPool;
    current = undefined; // next() replaces it right after this callback returns
    if (n === currentView!.length) nextPool = pools.large;
    else if (n < SMALL_REGION) nextPool = pools.small;
    if (stream.destroyed) {
      pool.give(region);
      return false;
    }
    if (stream.writeInPlace(region, n, () => pool.give(region))) {
      relayStats.inPlace++;
    } else {
      relayStats.copied++;
      const copy = Buffer.allocUnsafe(n);
      region.copy(copy, 0, FRAME_HEADER_LEN, FRAME_HEADER_LEN + n);
      pool.give(region);
      if (!stream.write(copy)) {
        paused = true;
        stream.once('drain', resume);
        return false;
      }
    }
    if (!stream.sessionWritable) {
      paused = true;
      stream.onWritable(resume);
      return false;
    }
    return true;
  };
  if (!useReadBuffers(sock, next, onRead)) return false;
  sock.once('end', () => stream.end());
  sock.once('close', () => {
    if (current) currentPool.give(current);
    current = undefined;
  });
  sock.resume();
  return true;
}
