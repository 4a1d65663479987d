/**
 * HTTP/2 tuning shared by the HBONE client (pool) and server (inbound), as Istio's ztunnel sets it:
 * big flow-control windows so one stream can fill a fast link, big frames to cut per-frame cost.
 * Node caps buffered session memory at 10 MB by default, below a 16 MiB connection window, so
 * maxSessionMemory is raised to match.
 */
import type * as http2 from 'node:http2';
import type { H2SessionOptions } from '../h2/session.ts';

export const H2_STREAM_WINDOW = 4 * 1024 * 1024;
export const H2_CONNECTION_WINDOW = 16 * 1024 * 1024;
/** HTTP/2 allows up to 16 MiB - 1; 1 MiB as ztunnel. Overridable for measurements (AMBIT_H2_MAX_FRAME). */
export const H2_MAX_FRAME = envInt('AMBIT_H2_MAX_FRAME', 1024 * 1024);
export const H2_MAX_STREAMS = 100;
/** In MB (node's unit). */
export const H2_MAX_SESSION_MEMORY = 64;

export function h2Settings(): http2.Settings {
  return {
    enablePush: false,
    initialWindowSize: envInt('AMBIT_H2_STREAM_WINDOW', H2_STREAM_WINDOW),
    maxFrameSize: H2_MAX_FRAME,
    maxConcurrentStreams: H2_MAX_STREAMS,
  };
}

/**
 * Which HTTP/2 implementation carries HBONE: 'lean' (src/ztunnel/h2, the default) or 'node'
 * (node:http2, for comparison). Read once at start-up from AMBIT_HBONE_H2.
 */
export const HBONE_H2: 'lean' | 'node' = process.env.AMBIT_HBONE_H2 === 'node' ? 'node' : 'lean';

/** The same tuning for the lean implementation. */
export function leanSessionOptions(): H2SessionOptions {
  return {
    initialWindowSize: envInt('AMBIT_H2_STREAM_WINDOW', H2_STREAM_WINDOW),
    connectionWindow: connectionWindow(),
    maxFrameSize: H2_MAX_FRAME,
    maxConcurrentStreams: H2_MAX_STREAMS,
    maxSendFrame: envInt('AMBIT_H2_SEND_FRAME', H2_MAX_FRAME),
    dataWrite: process.env.AMBIT_H2_DATA_WRITE || 'auto',
  };
}

export function connectionWindow(): number {
  return envInt('AMBIT_H2_CONNECTION_WINDOW', H2_CONNECTION_WINDOW);
}

function envInt(name: string, dflt: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  return Number.isInteger(n) && n > 0 ? n : dflt;
}
