/**
 * The one error type Ambit throws on purpose. `code` is stable (tests and operators match on it);
 * `message` says what to check or do.
 */
export class AmbitError extends Error {
  readonly code: string;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: string, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AmbitError';
    this.code = code;
    this.details = options?.details;
  }
}

export function isAmbitError(err: unknown, code?: string): err is AmbitError {
  return err instanceof AmbitError && (code === undefined || err.code === code);
}

/** Best-effort message of any thrown value, for logs. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
