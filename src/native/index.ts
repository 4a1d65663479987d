/**
 * TypeScript face of the native addon (src/native/*.c): TCP sockets created inside another network
 * namespace with the options Node.js does not expose, SO_ORIGINAL_DST, and SOCK_SEQPACKET messaging
 * with fd passing. The C side only makes syscalls; validation, errors and Node wrapping live here.
 *
 * Threads and blocking: setns + socket + bind + connect() run on a libuv pool thread, which goes
 * back to its own netns afterwards (or aborts the process). Connect completion is awaited on the
 * main loop (uv_poll), so neither the event loop nor a pool thread waits for the network.
 *
 * Errors are AmbitError with code NATIVE_<CALL> and details { errno: 'ECONNREFUSED', syscall, ... }:
 *   NATIVE_SETNS       the netns path/fd cannot be opened or entered (details.syscall 'open' | 'setns')
 *   NATIVE_SOCKET, NATIVE_SETSOCKOPT (details.option e.g. 'IP_TRANSPARENT'), NATIVE_BIND, NATIVE_LISTEN
 *   NATIVE_CONNECT     refused / unreachable / ETIMEDOUT (timeoutMs elapsed, fd closed)
 *   NATIVE_ORIGINAL_DST, NATIVE_SEQPACKET, NATIVE_CLOSE, NATIVE_SOCKET_MARK
 *   NATIVE_BAD_ARGUMENT a caller passed a wrong type / out-of-range value (message names it)
 *   NATIVE_NOT_BUILT   the .node file is missing (run `npm install`)
 *
 * Transparent connect with a spoofed source (the inbound path delivering to a pod app with the
 * client's IP as source): connect({ netns: pod, transparent: true, localAddress: clientIp, mark: 0x539 })
 * needs CAP_NET_ADMIN, and the pod netns must route the app's replies (addressed to clientIp, which
 * is not local) back to the agent's socket instead of out of the pod. The rules (as Istio's in-pod
 * redirection, verified by test/netns/native.test.ts "transparent connect"):
 *   iptables -t mangle -A PREROUTING -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff
 *   iptables -t mangle -A OUTPUT -m connmark --mark 0x111/0xfff -j CONNMARK --restore-mark
 *   ip rule add fwmark 0x111/0xfff lookup 100
 *   ip route add local 0.0.0.0/0 dev lo table 100
 * (IPv6: the same with ip6tables / `ip -6 rule` / `ip -6 route add local ::/0 dev lo table 100`.)
 * The agent's SYN enters via lo with mark 0x539 -> its connection gets connmark 0x111 -> the app's
 * replies get mark 0x111 in OUTPUT -> table 100 delivers them locally to the transparent socket.
 */
import net from 'node:net';
import os from 'node:os';
import { createRequire } from 'node:module';
import { AmbitError } from '../shared/errors.ts';
import { logger } from '../shared/log.ts';

export type NetnsRef = number | string; // an open netns fd, or a path (/var/run/netns/x, /proc/PID/ns/net)

/** What a listening and a connecting socket have in common. */
interface SocketOptions {
  netns?: NetnsRef;
  host: string;
  port: number;
  mark?: number;
  transparent?: boolean;
  freebind?: boolean;
}

export interface ListenOptions extends SocketOptions {
  /** SO_REUSEPORT (default false): lets a new agent open its listeners before the old one closes. */
  reusePort?: boolean;
  backlog?: number;
}

export interface ConnectOptions extends SocketOptions {
  localAddress?: string;
  localPort?: number;
  /** default 10000 */
  timeoutMs?: number;
  /** connect(): the net.Socket starts paused (no read until resume()/pipe()). */
  paused?: boolean;
  /** connect(): bytes the net.Socket buffers before write() asks the writer to wait (node's default 16 KiB). */
  writableHighWaterMark?: number;
}

export interface SeqpacketMessage {
  data: Buffer;
  /** Received fds (CLOEXEC), owned by the handler from now on: close them (closeFd) or keep them. */
  fds: number[];
  /** Send one message back on this connection. Returns false (does not throw) if the client is gone. */
  reply(data: Buffer): boolean;
}

export interface SeqpacketServer {
  readonly path: string;
  /** Stops accepting, closes all connections and unlinks the path (if it is still ours). Idempotent. */
  close(): void;
}

/** Largest seqpacket message either side accepts. */
export const SEQPACKET_MAX_MESSAGE = 65536;
export const SEQPACKET_MAX_FDS = 16;

interface RawError extends Error { errno?: number; syscall?: string; option?: string }
interface Binding {
  listenFd(o: object): Promise<number>;
  connectFd(o: object): Promise<number>;
  originalDst(fd: number): { address: string; port: number; family: 4 | 6 };
  socketMark(fd: number): number;
  openNetns(path: string): number;
  closeFd(fd: number): void;
  seqpacketListen(path: string, cb: (conn: number, data: Buffer | null, fds: number[] | null, err: RawError | null) => void): number;
  seqpacketReply(server: number, conn: number, data: Buffer): boolean;
  seqpacketClose(server: number): void;
  seqpacketRequest(path: string, data: Buffer, fds: number[], timeoutMs: number): Buffer;
}

const log = logger('native');
const BINDING_PATH = new URL('./build/Release/ambit_native.node', import.meta.url).pathname;
let binding: Binding | undefined;

/** Loaded on first use, so importing this module never fails where the addon is not built. */
function native(): Binding {
  if (binding) return binding;
  try {
    binding = createRequire(import.meta.url)(BINDING_PATH) as Binding;
  } catch (err) {
    throw new AmbitError('NATIVE_NOT_BUILT',
      `cannot load the native addon ${BINDING_PATH}: ${(err as Error).message}; run \`npm install\` in the Ambit directory (needs a C compiler and make)`,
      { cause: err });
  }
  return binding;
}

const errnoNames = new Map<number, string>(Object.entries(os.constants.errno).map(([name, n]) => [n, name]));
export function errnoName(n: number): string { return errnoNames.get(n) ?? `errno ${n}`; }

const HINTS: Record<string, string> = {
  ENOENT: 'the path does not exist',
  EPERM: 'needs root (CAP_NET_ADMIN / CAP_SYS_ADMIN)',
  EACCES: 'permission denied: needs root',
  ECONNREFUSED: 'nothing listens there',
  ETIMEDOUT: 'no answer in time: check routes and firewall rules on the path',
  EHOSTUNREACH: 'no route to the host: check routes and neighbours in that namespace',
  ENETUNREACH: 'no route to the network from that namespace',
  EADDRINUSE: 'the address/port is in use (reusePort lets two listeners share it)',
  EADDRNOTAVAIL: 'the address is not on an interface in that namespace (transparent/freebind allow it)',
  EINVAL: 'invalid argument (for a route: a blackhole/prohibit route?)',
};

function where(netns: NetnsRef | undefined): string {
  if (netns === undefined) return 'the current netns';
  return typeof netns === 'number' ? `netns fd ${netns}` : `netns ${netns}`;
}

function codeFor(syscall: string | undefined, option: string | undefined): string {
  if (syscall === 'setns' || (syscall === 'open' && option !== undefined && option.includes('ns'))) return 'NATIVE_SETNS';
  if (syscall === 'inet_pton') return 'NATIVE_BAD_ARGUMENT';
  return `NATIVE_${(syscall ?? 'error').toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
}

/** Turn an error from the C side into AmbitError (TypeErrors -> NATIVE_BAD_ARGUMENT). */
function wrap(err: unknown, what: string, code?: string, extra?: Record<string, unknown>,
  hints: Record<string, string> = HINTS): AmbitError {
  if (err instanceof AmbitError) return err;
  const e = err as RawError;
  if (typeof e?.errno !== 'number') {
    return new AmbitError('NATIVE_BAD_ARGUMENT', `${what}: ${e?.message ?? String(err)}`, { cause: err });
  }
  const name = errnoName(e.errno);
  const hint = hints[name] ?? HINTS[name];
  const call = e.option ? `${e.syscall}(${e.option})` : e.syscall;
  const reason = e.message.slice(e.message.lastIndexOf(': ') + 2).toLowerCase();
  return new AmbitError(code ?? codeFor(e.syscall, e.option),
    `${what} failed in ${call}: ${name} (${reason})${hint ? `; ${hint}` : ''}`,
    { cause: err, details: { errno: name, errnoNumber: e.errno, syscall: e.syscall, option: e.option, ...extra } });
}

const SEQPACKET_HINTS: Record<string, string> = {
  ENOENT: 'no socket at that path: is the server (the node agent) running?',
  ECONNREFUSED: 'a stale socket file nobody listens on: is the server (the node agent) running?',
  ECONNRESET: 'the server closed the connection without a reply (message too large or malformed?)',
  ETIMEDOUT: 'the server is not answering: check its log',
};

function badArg(msg: string): AmbitError { return new AmbitError('NATIVE_BAD_ARGUMENT', msg); }

function checkInt(name: string, v: unknown, min: number, max: number, optional: boolean): void {
  if (v === undefined && optional) return;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw badArg(`${name} must be an integer in ${min}..${max}, got ${JSON.stringify(v) ?? String(v)}`);
  }
}

function checkBool(name: string, v: unknown): void {
  if (v !== undefined && typeof v !== 'boolean') throw badArg(`${name} must be a boolean, got ${JSON.stringify(v)}`);
}

function checkNetns(v: unknown): void {
  if (v === undefined) return;
  if (typeof v === 'string') {
    if (v === '' || v.includes('\0')) throw badArg(`netns must be a non-empty path, got ${JSON.stringify(v)}`);
    return;
  }
  checkInt('netns (fd)', v, 0, 2 ** 31 - 1, false);
}

function checkIp(name: string, v: unknown): 4 | 6 {
  const family = typeof v === 'string' ? net.isIP(v) : 0;
  if (family === 0) throw badArg(`${name} must be an IPv4 or IPv6 address (no host names), got ${JSON.stringify(v)}`);
  return family as 4 | 6;
}

function checkCommon(o: ListenOptions | ConnectOptions, minPort: number): 4 | 6 {
  if (typeof o !== 'object' || o === null) throw badArg('options must be an object');
  checkNetns(o.netns);
  const family = checkIp('host', o.host);
  checkInt('port', o.port, minPort, 65535, false);
  checkInt('mark', o.mark, 0, 0xffffffff, true);
  checkBool('transparent', o.transparent);
  checkBool('freebind', o.freebind);
  return family;
}

/** A listening TCP socket (non-blocking, CLOEXEC) created in o.netns. The caller owns the fd. */
export async function listenFd(o: ListenOptions): Promise<number> {
  checkCommon(o, 0);
  checkBool('reusePort', o.reusePort);
  checkInt('backlog', o.backlog, 1, 65535, true);
  const what = `listen on ${fmtAddr(o.host, o.port)} in ${where(o.netns)}`;
  try {
    return await native().listenFd(o);
  } catch (err) {
    throw wrap(err, what, undefined, { address: o.host, port: o.port });
  }
}

/** listenFd, then `server.listen({ fd })`; resolves on 'listening'. The server owns the fd. */
export async function listen(server: net.Server, o: ListenOptions): Promise<void> {
  const fd = await listenFd(o);
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => {
      server.off('listening', onListening);
      reject(new AmbitError('NATIVE_LISTEN', `net.Server could not take listening fd ${fd} (${fmtAddr(o.host, o.port)} in ${where(o.netns)}): ${err.message}`, { cause: err }));
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    try {
      server.listen({ fd, backlog: o.backlog });
    } catch (err) { // e.g. ERR_SERVER_ALREADY_LISTEN: the server never took the fd
      server.off('error', onError);
      server.off('listening', onListening);
      closeFd(fd);
      reject(new AmbitError('NATIVE_LISTEN', `net.Server could not take listening fd ${fd}: ${(err as Error).message}`, { cause: err }));
    }
  });
}

/** A TCP socket (non-blocking, CLOEXEC) created in o.netns, resolved once CONNECTED. The caller owns the fd. */
export async function connectFd(o: ConnectOptions): Promise<number> {
  const family = checkCommon(o, 1);
  if (o.localAddress !== undefined && checkIp('localAddress', o.localAddress) !== family) {
    throw badArg(`localAddress ${o.localAddress} and host ${o.host} must be the same IP family`);
  }
  checkInt('localPort', o.localPort, 0, 65535, true);
  checkInt('timeoutMs', o.timeoutMs, 1, 86_400_000, true);
  const from = o.localAddress !== undefined || o.localPort ? ` from ${fmtAddr(o.localAddress ?? '*', o.localPort ?? 0)}` : '';
  const what = `connect to ${fmtAddr(o.host, o.port)}${from} in ${where(o.netns)}`;
  try {
    return await native().connectFd(o);
  } catch (err) {
    const e = err as RawError;
    // Failing to bind the source is part of connecting; keep the code callers look for.
    const code = e?.syscall === 'bind' ? 'NATIVE_CONNECT' : undefined;
    const timeout = e?.errno === os.constants.errno.ETIMEDOUT ? ` after ${o.timeoutMs ?? 10_000} ms` : '';
    throw wrap(err, what + timeout, code, { address: o.host, port: o.port });
  }
}

/** connectFd wrapped in a net.Socket (remoteAddress/localAddress work; the socket owns the fd). */
export async function connect(o: ConnectOptions): Promise<net.Socket> {
  const fd = await connectFd(o);
  try {
    // pauseOnCreate (what net.Server's pauseOnConnect uses) is not in node's typings
    return new net.Socket({ fd, readable: true, writable: true, pauseOnCreate: o.paused === true, writableHighWaterMark: o.writableHighWaterMark } as net.SocketConstructorOpts);
  } catch (err) {
    closeFd(fd);
    throw new AmbitError('NATIVE_CONNECT', `cannot wrap connected fd ${fd} in a net.Socket: ${(err as Error).message}`, { cause: err });
  }
}

function fdOf(s: net.Socket | number, what: string): number {
  if (typeof s === 'number') {
    checkInt('fd', s, 0, 2 ** 31 - 1, false);
    return s;
  }
  const fd = (s as unknown as { _handle?: { fd?: unknown } })?._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw new AmbitError('NATIVE_BAD_ARGUMENT', `${what}: the socket has no file descriptor (already closed, or not a TCP socket)`);
  }
  return fd;
}

/** Destination before iptables REDIRECT/DNAT of an accepted socket (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST). */
export function originalDst(s: net.Socket | number): { address: string; port: number; family: 4 | 6 } {
  const fd = fdOf(s, 'originalDst');
  try {
    return native().originalDst(fd);
  } catch (err) {
    throw wrap(err, `original destination of fd ${fd}`, 'NATIVE_ORIGINAL_DST');
  }
}

/** SO_MARK of a socket (diagnostics, tests). */
export function socketMark(s: net.Socket | number): number {
  const fd = fdOf(s, 'socketMark');
  try {
    return native().socketMark(fd);
  } catch (err) {
    throw wrap(err, `SO_MARK of fd ${fd}`, 'NATIVE_SOCKET_MARK');
  }
}

/** Open a netns (O_RDONLY|O_CLOEXEC) to keep a handle on it independent of the path. */
export function openNetns(path: string): number {
  if (typeof path !== 'string' || path === '') throw badArg(`netns path must be a non-empty string, got ${JSON.stringify(path)}`);
  try {
    return native().openNetns(path);
  } catch (err) {
    throw wrap(err, `open netns ${path}`, 'NATIVE_SETNS', { path });
  }
}

export function closeFd(fd: number): void {
  checkInt('fd', fd, 0, 2 ** 31 - 1, false);
  try {
    native().closeFd(fd);
  } catch (err) {
    throw wrap(err, `close fd ${fd}`, 'NATIVE_CLOSE');
  }
}

function checkUnixPath(path: unknown): asserts path is string {
  if (typeof path !== 'string' || path === '' || Buffer.byteLength(path) > 107) {
    throw badArg(`unix socket path must be a non-empty string of at most 107 bytes, got ${JSON.stringify(path)}`);
  }
}

function checkMessage(data: unknown): asserts data is Buffer {
  if (!Buffer.isBuffer(data)) throw badArg('seqpacket data must be a Buffer');
  if (data.length > SEQPACKET_MAX_MESSAGE) {
    throw new AmbitError('NATIVE_SEQPACKET', `seqpacket message of ${data.length} bytes exceeds the ${SEQPACKET_MAX_MESSAGE}-byte limit`,
      { details: { errno: 'EMSGSIZE', syscall: 'sendmsg' } });
  }
}

/**
 * AF_UNIX SOCK_SEQPACKET server (mode 0600; a stale socket file at path is replaced). Each message
 * (<= 64 KiB, <= 16 fds) calls onMessage; a throwing onMessage is an uncaught exception. Broken
 * connections (oversized message, too many fds, recv errors) are closed and reported to onError
 * (default: a warning in the log); the server keeps running.
 */
export function seqpacketListen(path: string, onMessage: (m: SeqpacketMessage) => void,
  onError?: (err: AmbitError) => void): SeqpacketServer {
  checkUnixPath(path);
  if (typeof onMessage !== 'function') throw badArg('seqpacketListen: onMessage must be a function');
  const b = native();
  let id = 0;
  let closed = false;
  const report = onError ?? ((err: AmbitError) => log.warn('seqpacket connection dropped', { socket: path, error: err.message }));
  const cb = (conn: number, data: Buffer | null, fds: number[] | null, err: RawError | null): void => {
    if (err) {
      report(wrap(err, conn === 0 ? `accept on ${path}` : `receive on ${path}`, 'NATIVE_SEQPACKET', { path }));
      return;
    }
    onMessage({
      data: data!,
      fds: fds ?? [],
      reply: (out: Buffer): boolean => {
        checkMessage(out);
        if (closed) return false;
        try {
          return b.seqpacketReply(id, conn, out);
        } catch (e) {
          throw wrap(e, `reply on ${path}`, 'NATIVE_SEQPACKET', { path });
        }
      },
    });
  };
  try {
    id = b.seqpacketListen(path, cb);
  } catch (err) {
    throw wrap(err, `listen on unix socket ${path}`, 'NATIVE_SEQPACKET', { path });
  }
  return {
    path,
    close(): void {
      if (closed) return;
      closed = true;
      b.seqpacketClose(id);
    },
  };
}

/**
 * Synchronous request/reply (blocks the caller up to timeoutMs; meant for the short-lived CNI
 * plugin). fds travel with the message (SCM_RIGHTS); the caller keeps its own copies.
 * Errors: NATIVE_SEQPACKET with errno ENOENT/ECONNREFUSED (nobody listens), ETIMEDOUT,
 * ECONNRESET (the server closed without a reply), EMSGSIZE.
 */
export function seqpacketRequest(path: string, data: Buffer, fds: number[], timeoutMs: number): Buffer {
  checkUnixPath(path);
  checkMessage(data);
  if (data.length === 0) throw badArg('seqpacket data must not be empty');
  if (!Array.isArray(fds) || fds.length > SEQPACKET_MAX_FDS) throw badArg(`fds must be an array of at most ${SEQPACKET_MAX_FDS} fd numbers`);
  fds.forEach((fd, i) => checkInt(`fds[${i}]`, fd, 0, 2 ** 31 - 1, false));
  checkInt('timeoutMs', timeoutMs, 1, 86_400_000, false);
  try {
    return native().seqpacketRequest(path, data, fds, timeoutMs);
  } catch (err) {
    const timeout = (err as RawError)?.errno === os.constants.errno.ETIMEDOUT ? ` (no reply within ${timeoutMs} ms)` : '';
    throw wrap(err, `request to ${path}${timeout}`, 'NATIVE_SEQPACKET', { path }, SEQPACKET_HINTS);
  }
}

function fmtAddr(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
