/**
 * The agent end of the CNI hand-off: a SOCK_SEQPACKET unix socket; each message is one JSON request
 * (src/api/pod-handoff.ts), an `add` carries the pod's netns fd. Replies {ok:true} or
 * {ok:false, code, message}. A malformed message gets HANDOFF_BAD_REQUEST and never takes the agent
 * down; any fd the server does not hand on to onAdd is closed here so none leak.
 */
import { existsSync, lstatSync, mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { closeFd, seqpacketListen } from '../native/index.ts';
import type { SeqpacketMessage } from '../native/index.ts';
import { encodeHandoff, parsePodHandoffRequest, HANDOFF_BAD_REQUEST } from '../api/pod-handoff.ts';
import type { PodHandoffAdd, PodHandoffReply } from '../api/pod-handoff.ts';
import { AmbitError, errorMessage, isAmbitError } from '../shared/errors.ts';
import { logger } from '../shared/log.ts';

const log = logger('handoff');
const CLOSE_WAIT_MS = 5000;

export interface PodHandoffServerOptions {
  socketPath: string;
  /** Takes ownership of netnsFd on success; throw (AmbitError) to refuse, the server then closes it. */
  onAdd(pod: PodHandoffAdd & { netnsFd: number }): Promise<void>;
  onDel(uid: string): Promise<void>;
}

function closeQuietly(fd: number): void {
  try {
    closeFd(fd);
  } catch (err) {
    log.warn('cannot close received fd', { fd, error: errorMessage(err) });
  }
}

export class PodHandoffServer {
  #opts: PodHandoffServerOptions;
  #listener: { close(): void } | undefined;
  #inflight = new Set<Promise<void>>();

  constructor(o: PodHandoffServerOptions) {
    this.#opts = o;
  }

  get socketPath(): string { return this.#opts.socketPath; }

  async start(): Promise<void> {
    if (this.#listener) return;
    const path = this.#opts.socketPath;
    mkdirSync(dirname(path), { recursive: true });
    // A socket file left by a previous agent would make bind fail; anything else is not ours to remove.
    if (existsSync(path)) {
      if (!lstatSync(path).isSocket()) {
        throw new AmbitError('HANDOFF_LISTEN', `cannot listen for the CNI plugin on ${path}: a non-socket file is in the way; remove it or pick another run dir`);
      }
      rmSync(path, { force: true });
    }
    try {
      this.#listener = seqpacketListen(path, (m) => this.#onMessage(m),
        (err) => log.warn('CNI plugin connection dropped', { socket: path, error: err.message }));
    } catch (err) {
      throw new AmbitError('HANDOFF_LISTEN', `cannot listen for the CNI plugin on ${path}: ${errorMessage(err)}`, { cause: err });
    }
    log.info('listening for pods from the CNI plugin', { socket: path });
  }

  async close(): Promise<void> {
    const l = this.#listener;
    this.#listener = undefined;
    if (l) l.close();
    rmSync(this.#opts.socketPath, { force: true });
    // Let in-flight hand-offs finish (bounded: a stuck onAdd must not hang the agent's shutdown).
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.#inflight]),
      new Promise<void>((resolve) => { timer = setTimeout(resolve, CLOSE_WAIT_MS); }),
    ]);
    clearTimeout(timer);
  }

  #onMessage(m: SeqpacketMessage): void {
    const p = this.#handle(m).catch((err: unknown) => log.error('hand-off message handling failed', { error: errorMessage(err) }));
    this.#inflight.add(p);
    void p.finally(() => this.#inflight.delete(p));
  }

  async #handle(m: SeqpacketMessage): Promise<void> {
    const fds = [...(m.fds ?? [])];
    let reply: PodHandoffReply;
    try {
      reply = await this.#dispatch(m.data, fds);
    } catch (err) {
      reply = isAmbitError(err)
        ? { ok: false, code: err.code, message: err.message }
        : { ok: false, code: 'HANDOFF_FAILED', message: `the node agent failed to take the pod: ${errorMessage(err)}` };
    } finally {
      // Whatever #dispatch did not hand on (fds is emptied when onAdd took one) is closed.
      for (const fd of fds.splice(0)) closeQuietly(fd);
    }
    if (!reply.ok) log.warn('hand-off refused', { code: reply.code, reason: reply.message });
    try {
      if (!m.reply(encodeHandoff(reply))) log.warn('the CNI plugin left before the reply (timed out?)', { ok: reply.ok });
    } catch (err) {
      log.warn('cannot reply to the CNI plugin (it may have timed out)', { error: errorMessage(err) });
    }
  }

  async #dispatch(data: Buffer, fds: number[]): Promise<PodHandoffReply> {
    const req = parsePodHandoffRequest(data);
    if (req.op === 'del') {
      await this.#opts.onDel(req.uid);
      return { ok: true };
    }
    if (fds.length !== 1) {
      throw new AmbitError(HANDOFF_BAD_REQUEST, `pod hand-off request rejected: an "add" must carry exactly one netns fd (got ${fds.length})`);
    }
    const netnsFd = fds[0]!;
    await this.#opts.onAdd({ ...req, netnsFd });
    // onAdd succeeded: the fd now belongs to the agent.
    fds.splice(0);
    return { ok: true };
  }
}
