/**
 * The supervisor's control socket: a unix stream socket in the state dir, one JSON request and one
 * JSON response per connection (newline-terminated). Used by every `ambit local` command but `up`.
 */
import { createConnection, createServer, type Server } from 'node:net';
import { rmSync } from 'node:fs';
import { AmbitError, errorMessage } from '../shared/errors.ts';

export interface ControlRequest { op: string; [key: string]: unknown }
export type ControlResponse = { ok: true; [key: string]: unknown } | { ok: false; code: string; message: string };

export function serveControl(path: string, handle: (req: ControlRequest) => Promise<Record<string, unknown>>): Promise<Server> {
  rmSync(path, { force: true });
  const server = createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => undefined);
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      buf = '';
      void (async () => {
        let resp: ControlResponse;
        try {
          const req = JSON.parse(line) as ControlRequest;
          resp = { ok: true, ...(await handle(req)) };
        } catch (err) {
          resp = { ok: false, code: err instanceof AmbitError ? err.code : 'LOCAL_CONTROL', message: errorMessage(err) };
        }
        if (!sock.destroyed) sock.end(JSON.stringify(resp) + '\n');
      })();
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve(server));
  });
}

/** Send one request. Throws LOCAL_NOT_RUNNING when nobody listens, or the server's error code. */
export function controlRequest(path: string, req: ControlRequest, timeoutMs = 300_000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    let buf = '';
    const timer = setTimeout(() => { sock.destroy(); reject(new AmbitError('LOCAL_TIMEOUT', `no answer from the local mesh supervisor (${path}) within ${timeoutMs / 1000}s`)); }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(JSON.stringify(req) + '\n'));
    sock.on('data', (d: string) => { buf += d; });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
        reject(new AmbitError('LOCAL_NOT_RUNNING', `the local mesh is not running (no supervisor at ${path}); start it with 'ambit local up'`));
      } else reject(new AmbitError('LOCAL_CONTROL', `control socket ${path}: ${err.message}`));
    });
    sock.on('end', () => {
      clearTimeout(timer);
      try {
        const resp = JSON.parse(buf) as ControlResponse;
        if (resp.ok) resolve(resp);
        else reject(new AmbitError(resp.code, resp.message));
      } catch {
        reject(new AmbitError('LOCAL_CONTROL', `bad answer from the supervisor: ${buf.slice(0, 200)}`));
      }
    });
  });
}
