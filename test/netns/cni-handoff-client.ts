/**
 * A stand-in CNI plugin for the hand-off server tests, run as a child process (seqpacketRequest is
 * synchronous, so the server must live in another process). argv: socket, message text, then
 * paths to open and send as fds. Prints the raw reply, or `ERROR <code>`.
 */
import { openSync } from 'node:fs';
import { seqpacketRequest } from '../../src/native/index.ts';

const [socket, message, ...paths] = process.argv.slice(2);
const fds = paths.map((p) => openSync(p, 'r'));
try {
  process.stdout.write(seqpacketRequest(socket!, Buffer.from(message!, 'utf8'), fds, 5000).toString('utf8'));
} catch (err) {
  process.stdout.write(`ERROR ${(err as { code?: string }).code}`);
}
