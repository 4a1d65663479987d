/** How an H2Session is tuned: what it advertises in SETTINGS and how it sends DATA. */
export interface H2SessionOptions {
  /** SETTINGS_INITIAL_WINDOW_SIZE we advertise (per-stream receive window). */
  initialWindowSize?: number;
  /** Connection receive window. */
  connectionWindow?: number;
  /** SETTINGS_MAX_FRAME_SIZE we advertise (largest frame we accept). */
  maxFrameSize?: number;
  /** SETTINGS_MAX_CONCURRENT_STREAMS we advertise and enforce. */
  maxConcurrentStreams?: number;
  /** Largest DATA frame we send (capped by the peer's SETTINGS_MAX_FRAME_SIZE). */
  maxSendFrame?: number;
  /** How a DATA frame's header and payload reach the socket: auto (default) | concat | cork | separate. */
  dataWrite?: string;
}
