/**
 * Entry point of the `ambit-cni` executable (bin/ambit-cni): a container runtime execs it with the
 * CNI_* environment and the network configuration on stdin; the result (or CNI error) goes to
 * stdout. Kept tiny: a runtime execs it for every pod, so start-up time is pod start-up time.
 * Everything heavy is imported only when a pod is actually in the mesh (see plugin.ts).
 */
import { enableCompileCache } from 'node:module';
import { readFileSync, writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// Caches the type-stripped, compiled modules below across runs; a cold run still works, only
// slower. Not in the shared temp dir: this runs as root, the cache must not be writable by others.
// (NODE_COMPILE_CACHE set by the wrapper wins, and also covers this file itself.)
enableCompileCache?.(fileURLToPath(new URL('../../node_modules/.cache/ambit-compile-cache', import.meta.url)));
const { runCni } = await import('./plugin.ts');

function readStdin(): string {
  try {
    return readFileSync(0, 'utf8');
  } catch {
    return '';   // no stdin (e.g. VERSION from a terminal)
  }
}

const outcome = await runCni(process.env, readStdin());
if (outcome.stdout) writeSync(1, outcome.stdout + '\n');
process.exitCode = outcome.exitCode;
