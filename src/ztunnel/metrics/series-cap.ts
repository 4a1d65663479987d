/**
 * A hard bound on the number of label sets the TCP metrics export. Label values are workload-level
 * already (labels.ts), but a mesh with very many workloads x services, or a churn of workload names,
 * must not grow the agent's memory and the scrape without limit. Past the cap, connections of NEW
 * label sets are counted under one overflow set (every label `overflow` except reporter,
 * request_protocol and connection_security_policy), so totals stay right and the loss of detail is
 * visible; known sets keep their own series. Counted sets are never dropped (counters must stay
 * monotonic for rate()); the cap counts sets seen since the agent started.
 */
import { TCP_LABEL_NAMES, type TcpLabels } from './labels.ts';

export const DEFAULT_MAX_LABEL_SETS = 2000;
export const OVERFLOW = 'overflow';

const KEEP = new Set(['reporter', 'request_protocol', 'connection_security_policy']);

export function labelKey(l: TcpLabels): string {
  let key = '';
  for (const n of TCP_LABEL_NAMES) key += l[n] + '\u0001';
  return key;
}

export function overflowLabels(l: TcpLabels): TcpLabels {
  const out = { ...l };
  for (const n of TCP_LABEL_NAMES) if (!KEEP.has(n)) out[n] = OVERFLOW;
  return out;
}

export class SeriesCap {
  readonly max: number;
  #known = new Set<string>();
  #overflowed = 0;
  #onFirstOverflow: (() => void) | undefined;

  constructor(max = DEFAULT_MAX_LABEL_SETS, onFirstOverflow?: () => void) {
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`series cap must be a whole number >= 1, got ${max}`);
    this.max = max;
    this.#onFirstOverflow = onFirstOverflow;
  }

  /** The labels to count under: `l` itself while there is room or it is known, else its overflow set. */
  admit(l: TcpLabels): TcpLabels {
    const key = labelKey(l);
    if (this.#known.has(key)) return l;
    if (this.#known.size < this.max) {
      this.#known.add(key);
      return l;
    }
    if (this.#overflowed++ === 0) this.#onFirstOverflow?.();
    return overflowLabels(l);
  }

  /** Label sets with their own series. */
  get size(): number { return this.#known.size; }
  /** Connections counted under the overflow set. */
  get overflowed(): number { return this.#overflowed; }
}
