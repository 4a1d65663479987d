/**
 * Errors of Kubernetes API calls, apart from the client so that code that only inspects them (the
 * CA's token checks) does not load @kubernetes/client-node.
 */
import { errorMessage } from '../../../shared/errors.ts';

/** A non-2xx answer from the API server (or no answer: status 0). */
export class KubeApiError extends Error {
  /** HTTP status; 0 when the server could not be reached. */
  readonly statusCode: number;
  /** The Status object's reason, e.g. NotFound, Expired, Conflict. */
  readonly reason: string;
  /** client-node's ListWatch looks at `code` for 410. */
  readonly code: number;
  constructor(statusCode: number, reason: string, message: string) {
    super(message);
    this.name = 'KubeApiError';
    this.statusCode = statusCode;
    this.code = statusCode;
    this.reason = reason;
  }
}

export function statusOf(err: unknown): number {
  if (err instanceof KubeApiError) return err.statusCode;
  const e = err as { statusCode?: unknown; code?: unknown } | undefined;
  if (typeof e?.statusCode === 'number') return e.statusCode;
  if (typeof e?.code === 'number') return e.code;
  return 0;
}

/** An error's message with its cause's (fetch says only "fetch failed"; the cause says why). */
export function describeError(err: unknown): string {
  const cause = (err as { cause?: unknown } | undefined)?.cause;
  const own = errorMessage(err);
  return cause === undefined ? own : `${own} (${describeError(cause)})`;
}
