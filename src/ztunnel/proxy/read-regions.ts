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

/** 9 bytes of header room + 65527 bytes of payload: one frame fills exactly four 16 KiB TLS records. */
export const REGION_SIZE = 64 * 1024;
export const REGION_PAYLOAD = REGION_SIZE - FRAME_HEADER_LEN;
const REGIONS_PER_SLAB = 16;

export class RegionPool {
  #free: Buffer[] = [];
  #maxFree: number;
  /** Regions handed out and not yet given back (metrics and tests). */
  outstanding = 0;

  /** `maxFree` bounds the idle memory kept for reuse (default 64 regions = 4 MiB). */
  constructor(maxFree = 64) {
    this.#maxFree = maxFree;
  }

  take(): Buffer {
    this.outstanding++;
    const r = this.#free.pop();
    if (r) return r;
    // One allocation per 16 regions; a slab is freed by GC once none of its regions is referenced.
    const slab = Buffer.allocUnsafeSlow(REGION_SIZE * REGIONS_PER_SLAB);
    for (let i = 1; i < REGIONS_PER_SLAB && this.#free.length < this.#maxFree; i++) {
      this.#free.push(slab.subarray(i * REGION_SIZE, (i + 1) * REGION_SIZE));
    }
    return slab.subarray(0, REGION_SIZE);
  }

  give(region: Buffer): void {
    this.outstanding--;
    if (this.#free.length < this.#maxFree) this.#free.push(region);
  }

  get idle(): number { return this.#free.length; }
}

export const sharedRegions = new RegionPool();

/** Reads relayed without a copy / through a copy (window full or something queued ahead). */
export const relayStats = { inPlace: 0, copied: 0 };

/** The payload part of a region, where a socket reads (node's onread buffer). */
export function payloadView(region: Buffer): Buffer {
  return region.subarray(FRAME_HEADER_LEN, REGION_SIZE);
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
export function relayIntoStream(sock: net.Socket, stream: InPlaceSink, pool: RegionPool = sharedRegions): boolean {
  let current: Buffer | undefined;
  let paused = false;
  const next = (): Uint8Array => {
    current = pool.take();
    return payloadView(current);
  };
  const resume = (): void => {
    if (!paused || sock.destroyed) return;
    paused = false;
    sock.resume();
  };
  const onRead = (n: number): boolean => {
    const region = current!;
    current = undefined; // next() replaces it right after this callback returns
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
    if (current) pool.give(current);
    current = undefined;
  });
  sock.resume();
  return true;
}
