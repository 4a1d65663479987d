/**
 * Structured, component-scoped logging: one line per event. Text by default
 * (`2026-01-01T00:00:00.000Z info agent pod added ns=a name=b`), JSON when AMBIT_LOG_FORMAT=json.
 * Levels change at run time (setLogLevel / setLogLevels, e.g. from the admin API's /logging), for
 * everything or per component: `access` (the per-connection access log) can be turned off or up on
 * its own. A component `a.b` follows `a` unless it has its own level.
 */
import { AmbitError } from './errors.ts';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'off';
const order: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, off: 100 };
export const LOG_LEVELS = Object.keys(order) as LogLevel[];

let globalLevel: LogLevel = 'info';
/** Per-component overrides, and the effective threshold per component (rebuilt when levels change). */
const componentLevels = new Map<string, LogLevel>();
const effective = new Map<string, number>();
let jsonFormat = process.env.AMBIT_LOG_FORMAT === 'json';
let sink: (line: string) => void = (line) => process.stderr.write(line + '\n');

export function parseLevel(value: string | undefined): LogLevel | undefined {
  return value !== undefined && Object.hasOwn(order, value) ? (value as LogLevel) : undefined;
}

/** Everything (no component), or one component and its children. */
export function setLogLevel(level: LogLevel, component?: string): void {
  if (component === undefined || component === '') globalLevel = level;
  else componentLevels.set(component, level);
  effective.clear();
}

/** A component follows the default level (or its parent's) again. */
export function clearLogLevel(component: string): void {
  componentLevels.delete(component);
  effective.clear();
}

export function getLogLevel(component?: string): LogLevel {
  if (component === undefined) return globalLevel;
  for (let c: string | undefined = component; c; c = parentOf(c)) {
    const l = componentLevels.get(c);
    if (l) return l;
  }
  return globalLevel;
}

/** The default level and every per-component override (what the admin API shows). */
export function getLogLevels(): { level: LogLevel; components: Record<string, LogLevel> } {
  return { level: globalLevel, components: Object.fromEntries([...componentLevels].sort((a, b) => a[0].localeCompare(b[0]))) };
}

/**
 * Apply a level spec as Istio's ztunnel takes it: `debug` (everything), `access:off`, or a comma
 * list `info,access:off,agent.state:debug`. Validated whole before anything changes; a bad part
 * throws LOG_BAD_LEVEL naming it.
 */
export function setLogLevels(spec: string): void {
  const parts = spec.split(',').map((p) => p.trim()).filter(Boolean);
  if (parts.length === 0) throw new AmbitError('LOG_BAD_LEVEL', `empty log level spec; give a level (${LOG_LEVELS.join('|')}) or component:level pairs`);
  const changes: [string | undefined, LogLevel][] = [];
  for (const part of parts) {
    const i = part.lastIndexOf(':');
    const component = i < 0 ? undefined : part.slice(0, i);
    const level = parseLevel(i < 0 ? part : part.slice(i + 1));
    if (!level || component === '') {
      throw new AmbitError('LOG_BAD_LEVEL', `bad log level "${part}" in "${spec}": use LEVEL or COMPONENT:LEVEL with LEVEL one of ${LOG_LEVELS.join(', ')}`);
    }
    changes.push([component, level]);
  }
  for (const [component, level] of changes) setLogLevel(level, component);
}

export function setLogFormat(format: 'text' | 'json'): void { jsonFormat = format === 'json'; }
export function getLogFormat(): 'text' | 'json' { return jsonFormat ? 'json' : 'text'; }
/** Redirect log lines (tests capture them). Returns the previous sink. */
export function setLogSink(next: (line: string) => void): (line: string) => void {
  const prev = sink;
  sink = next;
  return prev;
}

/** Would a line at this level from this component be written? (skip building costly fields) */
export function logEnabled(component: string, level: LogLevel): boolean {
  return order[level] >= threshold(component);
}

function parentOf(component: string): string | undefined {
  const i = component.lastIndexOf('.');
  return i < 0 ? undefined : component.slice(0, i);
}

function threshold(component: string): number {
  if (componentLevels.size === 0) return order[globalLevel];
  let t = effective.get(component);
  if (t === undefined) {
    t = order[getLogLevel(component)];
    effective.set(component, t);
  }
  return t;
}

{
  // AMBIT_LOG_LEVEL takes the same spec as setLogLevels (e.g. `info,access:off`); a bad one is ignored loudly.
  const env = process.env.AMBIT_LOG_LEVEL;
  if (env) {
    try {
      setLogLevels(env);
    } catch (err) {
      process.stderr.write(`ignoring AMBIT_LOG_LEVEL: ${(err as Error).message}\n`);
    }
  }
}

export type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  child(component: string): Logger;
}

function formatValue(v: unknown): string {
  if (typeof v === 'string') return /[\s"=]/.test(v) || v === '' ? JSON.stringify(v) : v;
  if (v instanceof Error) return JSON.stringify(v.message);
  return JSON.stringify(v) ?? 'undefined';
}

function emit(level: LogLevel, component: string, msg: string, fields?: Fields): void {
  if (order[level] < threshold(component)) return;
  const time = new Date().toISOString();
  if (jsonFormat) {
    // A field named like a built-in key (e.g. `level` of "logging changed") must not replace it.
    const line: Record<string, unknown> = { time, level, component, msg };
    if (fields) for (const [k, v] of Object.entries(fields)) line[k in line ? `field.${k}` : k] = v;
    sink(JSON.stringify(line));
    return;
  }
  let line = `${time} ${level} ${component} ${msg}`;
  if (fields) for (const [k, v] of Object.entries(fields)) if (v !== undefined) line += ` ${k}=${formatValue(v)}`;
  sink(line);
}

export function logger(component: string): Logger {
  return {
    debug: (m, f) => emit('debug', component, m, f),
    info: (m, f) => emit('info', component, m, f),
    warn: (m, f) => emit('warn', component, m, f),
    error: (m, f) => emit('error', component, m, f),
    child: (sub) => logger(`${component}.${sub}`),
  };
}
