/**
 * HTTP/2 flow-control windows (RFC 9113 §5.2, §6.9). One pair per stream and per connection.
 * Receive side: bytes are charged when a DATA frame arrives and credited back (WINDOW_UPDATE) only
 * once the reader consumed them, in batches, so a slow reader stops the sender instead of growing
 * our buffers. Send side: how much the peer still accepts; may go negative after a SETTINGS change.
 */
import { MAX_WINDOW } from './frames.ts';

/** Credit back once this fraction of the window was consumed (fewer, larger WINDOW_UPDATEs). */
const CREDIT_FRACTION = Number(process.env.AMBIT_H2_CREDIT_FRACTION) > 0 ? Number(process.env.AMBIT_H2_CREDIT_FRACTION) : 0.5;

export class ReceiveWindow {
  /** What the peer may still send before our next WINDOW_UPDATE. */
  #open: number;
  /** The window size we keep offering. */
  #size: number;
  /** Consumed by the reader, not credited yet. */
  #consumed = 0;

  constructor(size: number) {
    this.#open = size;
    this.#size = size;
  }

  get open(): number { return this.#open; }
  get size(): number { return this.#size; }

  /** Charges an arriving DATA frame; false when it exceeds the window (FLOW_CONTROL_ERROR). */
  charge(n: number): boolean {
    if (n > this.#open) return false;
    this.#open -= n;
    return true;
  }

  /** The reader consumed `n` bytes; returns the WINDOW_UPDATE increment to send now (0: not yet). */
  consume(n: number): number {
    this.#consumed += n;
    if (this.#consumed < this.#size * CREDIT_FRACTION && this.#open > 0) return 0;
    const inc = this.#consumed;
    this.#consumed = 0;
    this.#open += inc;
    return inc;
  }

  /** Grows the offered window; returns the increment to announce. */
  resize(size: number): number {
    const inc = Math.max(0, Math.min(size, MAX_WINDOW) - this.#size);
    this.#size += inc;
    this.#open += inc;
    return inc;
  }
}

export class SendWindow {
  #avail: number;

  constructor(initial: number) {
    this.#avail = initial;
  }

  get available(): number { return this.#avail; }

  take(n: number): void {
    this.#avail -= n;
  }

  /** A WINDOW_UPDATE arrived; false if the window would exceed 2^31-1 (FLOW_CONTROL_ERROR). */
  credit(inc: number): boolean {
    if (this.#avail + inc > MAX_WINDOW) return false;
    this.#avail += inc;
    return true;
  }

  /** SETTINGS_INITIAL_WINDOW_SIZE changed by `delta` (RFC 9113 §6.9.2); false on overflow. */
  adjust(delta: number): boolean {
    if (this.#avail + delta > MAX_WINDOW) return false;
    this.#avail += delta;
    return true;
  }
}
