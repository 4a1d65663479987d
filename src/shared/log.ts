/**
 * Structured, component-scoped logging: one line per event. Text by default
 * (`2026-01-01T00:00:00.000Z info agent pod added ns=a name=b`), JSON when AMBIT_LOG_FORMAT=json.
 * The level can change at run time (setLogLevel), e.g. from the admin API.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'off';
const order: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, off: 100 };

let globalLevel: LogLevel = parseLevel(process.env.AMBIT_LOG_LEVEL) ?? 'info';
let jsonFormat = process.env.AMBIT_LOG_FORMAT === 'json';
let sink: (line: string) => void = (line) => process.stderr.write(line + '\n');

export function parseLevel(value: string | undefined): LogLevel | undefined {
  return value !== undefined && value in order ? (value as LogLevel) : undefined;
}
export function setLogLevel(level: LogLevel): void { globalLevel = level; }
export function getLogLevel(): LogLevel { return globalLevel; }
export function setLogFormat(format: 'text' | 'json'): void { jsonFormat = format === 'json'; }
/** Redirect log lines (tests capture them). Returns the previous sink. */
export function setLogSink(next: (line: string) => void): (line: string) => void {
  const prev = sink;
  sink = next;
  return prev;
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
  if (order[level] < order[globalLevel]) return;
  const time = new Date().toISOString();
  if (jsonFormat) {
    sink(JSON.stringify({ time, level, component, msg, ...fields }));
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
