/** The peer's SETTINGS (RFC 9113 §6.5): their defaults and how a SETTINGS frame updates them. */
import {
  DEFAULT_MAX_FRAME, E_FLOW_CONTROL_ERROR, E_FRAME_SIZE_ERROR, E_PROTOCOL_ERROR, H2Error, MAX_ALLOWED_FRAME, MAX_WINDOW,
  S_ENABLE_PUSH, S_HEADER_TABLE_SIZE, S_INITIAL_WINDOW_SIZE, S_MAX_CONCURRENT_STREAMS, S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE,
} from './frames.ts';

export interface RemoteSettings {
  headerTableSize: number;
  enablePush: boolean;
  maxConcurrentStreams: number;
  initialWindowSize: number;
  maxFrameSize: number;
  maxHeaderListSize: number;
}

/** What a peer has until its first SETTINGS frame says otherwise. */
export function defaultRemoteSettings(): RemoteSettings {
  return {
    headerTableSize: 4096,
    enablePush: true,
    maxConcurrentStreams: 2 ** 32 - 1,
    initialWindowSize: 65_535,
    maxFrameSize: DEFAULT_MAX_FRAME,
    maxHeaderListSize: Infinity,
  };
}

/**
 * Apply a SETTINGS payload (not an ACK) to `r` in place. Returns how much every stream's send window
 * moves (a changed SETTINGS_INITIAL_WINDOW_SIZE). Throws H2Error on a value the RFC forbids.
 */
export function applySettings(r: RemoteSettings, payload: Buffer, weAreClient: boolean): number {
  if (payload.length % 6 !== 0) throw new H2Error(E_FRAME_SIZE_ERROR, `SETTINGS payload of ${payload.length} bytes`);
  let windowDelta = 0;
  for (let i = 0; i < payload.length; i += 6) {
    const id = payload.readUInt16BE(i);
    const v = payload.readUInt32BE(i + 2);
    switch (id) {
      case S_HEADER_TABLE_SIZE: r.headerTableSize = v; break; // our encoder never indexes: nothing to do
      case S_ENABLE_PUSH:
        if (v > 1) throw new H2Error(E_PROTOCOL_ERROR, `SETTINGS_ENABLE_PUSH ${v}`);
        if (weAreClient && v === 1) throw new H2Error(E_PROTOCOL_ERROR, 'server sent SETTINGS_ENABLE_PUSH 1');
        r.enablePush = v === 1;
        break;
      case S_MAX_CONCURRENT_STREAMS: r.maxConcurrentStreams = v; break;
      case S_INITIAL_WINDOW_SIZE:
        if (v > MAX_WINDOW) throw new H2Error(E_FLOW_CONTROL_ERROR, `SETTINGS_INITIAL_WINDOW_SIZE ${v}`);
        windowDelta += v - r.initialWindowSize;
        r.initialWindowSize = v;
        break;
      case S_MAX_FRAME_SIZE:
        if (v < DEFAULT_MAX_FRAME || v > MAX_ALLOWED_FRAME) throw new H2Error(E_PROTOCOL_ERROR, `SETTINGS_MAX_FRAME_SIZE ${v}`);
        r.maxFrameSize = v;
        break;
      case S_MAX_HEADER_LIST_SIZE: r.maxHeaderListSize = v; break;
      default: break; // unknown settings are ignored
    }
  }
  return windowDelta;
}
