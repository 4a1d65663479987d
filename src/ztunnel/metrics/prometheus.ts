/**
 * A small Prometheus client: counters and gauges (with or without labels) in a registry that
 * renders the text exposition format 0.0.4. Written for the agent's memory budget: no package to
 * load, a series keeps only its label values (shared with the caller's strings; the label text is
 * written at scrape time), and counting into a label set already seen allocates nothing (the label
 * object is hashed field by field and compared, no key string is built).
 */
import { AmbitError } from '../../shared/errors.ts';

export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export type MetricType = 'counter' | 'gauge';
export type Labels<L extends string> = Readonly<Record<L, string>>;

export interface Sample {
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface Metric {
  readonly name: string;
  readonly help: string;
  readonly type: MetricType;
  /** Bring the values up to date (the metric's collect callback); the registry calls it before rendering. */
  collect(): void | Promise<void>;
  samples(): Sample[];
  /** The sample lines of the exposition, each ending in a newline ('' for none). */
  lines(): string;
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

export function escapeHelp(s: string): string {
  return s.replace(/[\\\n]/g, (c) => (c === '\\' ? '\\\\' : '\\n'));
}

const LABEL_SPECIAL = /[\\"\n]/;

export function escapeLabelValue(s: string): string {
  if (!LABEL_SPECIAL.test(s)) return s; // the usual case, without replace()'s callback machinery
  return s.replace(/[\\"\n]/g, (c) => (c === '\\' ? '\\\\' : c === '"' ? '\\"' : '\\n'));
}

export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

export class Registry {
  readonly contentType = CONTENT_TYPE;
  readonly #metrics = new Map<string, Metric>();

  register(m: Metric): void {
    if (this.#metrics.has(m.name)) throw new AmbitError('METRICS_DUPLICATE', `metric ${m.name} is already registered`);
    this.#metrics.set(m.name, m);
  }

  get(name: string): Metric | undefined {
    return this.#metrics.get(name);
  }

  /** Every metric's collect callback (awaited), then the exposition text. */
  async metrics(): Promise<string> {
    const pending: Promise<void>[] = [];
    for (const m of this.#metrics.values()) {
      const p = m.collect();
      if (p) pending.push(p);
    }
    if (pending.length > 0) await Promise.all(pending);
    const parts: string[] = [];
    for (const m of this.#metrics.values()) {
      parts.push(`# HELP ${m.name} ${escapeHelp(m.help)}\n# TYPE ${m.name} ${m.type}\n${m.lines()}`);
    }
    // One blank line between families, as the common clients write it; parsers skip it.
    return parts.join('\n');
  }
}

class Series {
  /** The label values in label-name order. */
  readonly values: readonly string[];
  value = 0;
  /** The next series with the same hash. */
  next: Series | undefined;

  constructor(values: readonly string[]) {
    this.values = values;
  }
}

/** The series of one metric, found by label values without building a key. */
class SeriesSet<L extends string> {
  readonly #metric: string;
  readonly #names: readonly L[];
  readonly #byHash = new Map<number, Series>();
  /** The values of the label set being looked up (reused: a lookup allocates nothing). */
  readonly #scratch: string[];
  /** In creation order, for rendering. */
  readonly #all: Series[] = [];

  constructor(metric: string, names: readonly L[]) {
    this.#metric = metric;
    this.#names = names;
    this.#scratch = names.map(() => '');
  }

  get(labels: Labels<L>): Series {
    const names = this.#names;
    const values = this.#scratch;
    let h = 0x811c9dc5;
    for (let i = 0; i < names.length; i++) {
      const v = labels[names[i]];
      if (typeof v !== 'string') throw this.#bad(`label ${names[i]} must be a string, got ${typeof v}`);
      values[i] = v;
      for (let j = 0; j < v.length; j++) h = Math.imul(h ^ v.charCodeAt(j), 0x01000193);
      h = Math.imul(h ^ 0x10000, 0x01000193); // no char code is 0x10000: "ab","c" and "a","bc" hash apart
    }
    const first = this.#byHash.get(h);
    for (let s = first; s; s = s.next) if (same(s.values, values)) return s;
    const s = this.#create(labels);
    s.next = first;
    this.#byHash.set(h, s);
    return s;
  }

  #create(labels: Labels<L>): Series {
    for (const k of Object.keys(labels)) if (!(this.#names as readonly string[]).includes(k)) throw this.#bad(`unknown label ${k}`);
    const s = new Series([...this.#scratch]);
    this.#all.push(s);
    return s;
  }

  samples(): Sample[] {
    return this.#all.map((s) => ({ labels: Object.fromEntries(this.#names.map((n, i) => [n, s.values[i]])), value: s.value }));
  }

  /** `name{a="x",b="y"} value` lines, labels in label-name order. */
  lines(metric: string): string {
    const names = this.#names;
    const parts: string[] = [];
    for (const s of this.#all) {
      parts.push(metric);
      for (let i = 0; i < names.length; i++) parts.push(i === 0 ? '{' : ',', names[i], '="', escapeLabelValue(s.values[i]), '"');
      parts.push(names.length > 0 ? '} ' : ' ', formatValue(s.value), '\n');
    }
    return parts.join('');
  }

  #bad(what: string): AmbitError {
    return new AmbitError('METRICS_BAD_LABELS', `${this.#metric}: ${what} (labels: ${this.#names.join(', ') || 'none'})`);
  }
}

function same(a: readonly string[], b: readonly string[]): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export interface MetricOptions<L extends string, M> {
  name: string;
  help: string;
  labelNames?: readonly L[];
  /** Registers the metric here. */
  registry?: Registry;
  /** Called before every scrape to bring the values up to date. */
  collect?: (metric: M) => void | Promise<void>;
}

abstract class Base<L extends string> implements Metric {
  readonly name: string;
  readonly help: string;
  abstract readonly type: MetricType;
  readonly #series: SeriesSet<L>;
  /** The one series of a metric without labels (it shows 0 before any count, like other clients). */
  readonly #only: Series | undefined;

  constructor(o: Omit<MetricOptions<L, unknown>, 'collect'>) {
    if (!METRIC_NAME.test(o.name)) throw new AmbitError('METRICS_BAD_NAME', `metric name ${JSON.stringify(o.name)} is not a Prometheus name ([a-zA-Z_:][a-zA-Z0-9_:]*)`);
    const names = o.labelNames ?? [];
    for (const n of names) {
      if (!LABEL_NAME.test(n) || n.startsWith('__')) throw new AmbitError('METRICS_BAD_NAME', `${o.name}: label name ${JSON.stringify(n)} is not a Prometheus label name`);
    }
    if (new Set(names).size !== names.length) throw new AmbitError('METRICS_BAD_NAME', `${o.name}: label names repeat: ${names.join(', ')}`);
    this.name = o.name;
    this.help = o.help;
    this.#series = new SeriesSet(o.name, names);
    this.#only = names.length === 0 ? this.#series.get({} as Labels<L>) : undefined;
    o.registry?.register(this);
  }

  abstract collect(): void | Promise<void>;

  samples(): Sample[] {
    return this.#series.samples();
  }

  lines(): string {
    return this.#series.lines(this.name);
  }

  /** The series for `labels`; undefined for a metric without labels. Label sets are checked when first seen. */
  protected pick(labels: Labels<L> | undefined): Series {
    if (labels !== undefined) return this.#series.get(labels);
    if (this.#only) return this.#only;
    throw new AmbitError('METRICS_BAD_LABELS', `${this.name} has labels; pass them`);
  }
}

/** A value that only goes up. */
export class Counter<L extends string = never> extends Base<L> {
  readonly type = 'counter';
  readonly #collect: ((c: Counter<L>) => void | Promise<void>) | undefined;

  constructor(o: MetricOptions<L, Counter<L>>) {
    super(o);
    this.#collect = o.collect;
  }

  collect(): void | Promise<void> {
    return this.#collect?.(this);
  }

  inc(by?: number): void;
  inc(labels: Labels<L>, by?: number): void;
  inc(a?: number | Labels<L>, b?: number): void {
    const labels = typeof a === 'object' ? a : undefined;
    const by = typeof a === 'object' ? (b ?? 1) : (a ?? 1);
    if (!(by >= 0 && by < Infinity)) throw new AmbitError('METRICS_BAD_VALUE', `${this.name}: a counter only goes up by a finite amount, not ${by}`);
    this.pick(labels).value += by;
  }
}

/** A value that goes up and down, usually set by its collect callback at scrape time. */
export class Gauge<L extends string = never> extends Base<L> {
  readonly type = 'gauge';
  readonly #collect: ((g: Gauge<L>) => void | Promise<void>) | undefined;

  constructor(o: MetricOptions<L, Gauge<L>>) {
    super(o);
    this.#collect = o.collect;
  }

  collect(): void | Promise<void> {
    return this.#collect?.(this);
  }

  set(value: number): void;
  set(labels: Labels<L>, value: number): void;
  set(a: number | Labels<L>, b?: number): void {
    const value = typeof a === 'object' ? b : a;
    if (typeof value !== 'number') throw new AmbitError('METRICS_BAD_VALUE', `${this.name}: a gauge is set to a number, not ${typeof value}`);
    this.pick(typeof a === 'object' ? a : undefined).value = value;
  }
}
