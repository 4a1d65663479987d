/**
 * /logging of the admin API: shows and changes the log levels (shared/log.ts owns them). A level
 * spec is what ztunnel takes: `debug`, `access:off`, or `info,access:debug`; `format` switches
 * every line (the access log included) between text and JSON.
 */
import { AmbitError } from '../../shared/errors.ts';
import { getLogFormat, getLogLevels, setLogFormat, setLogLevels, type LogLevel } from '../../shared/log.ts';

export interface LoggingState {
  level: LogLevel;
  /** Per-component overrides, e.g. { access: 'off' }. */
  components: Record<string, LogLevel>;
  format: 'text' | 'json';
}

export function loggingState(): LoggingState {
  return { ...getLogLevels(), format: getLogFormat() };
}

/** Validates both before changing anything; errors name the bad value (LOG_BAD_LEVEL, ZT_ADMIN_BAD_REQUEST). */
export function setLogging(o: { level?: string | null; format?: string | null }): void {
  if (o.format != null && o.format !== 'text' && o.format !== 'json') {
    throw new AmbitError('ZT_ADMIN_BAD_REQUEST', `format must be text or json, got ${JSON.stringify(o.format)}`);
  }
  if (o.level != null) setLogLevels(o.level);
  if (o.format != null) setLogFormat(o.format);
}
