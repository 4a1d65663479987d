/** Running the system tools the runtime drives (ip, iptables, CNI plugins), with their output kept for errors. */
import { spawn } from 'node:child_process';
import { AmbitError } from '../shared/errors.ts';

export interface RunResult { code: number; stdout: string; stderr: string }
export interface RunOptions { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }

export function runCmd(cmd: string, args: string[], o: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: o.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 60_000);
    child.on('error', (err) => { clearTimeout(timer); reject(new AmbitError('LOCAL_EXEC', `cannot run ${cmd}: ${err.message}`)); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    child.stdin.on('error', () => { /* the tool may not read stdin */ });
    child.stdin.end(o.input ?? '');
  });
}

/** Run and throw LOCAL_EXEC with the tool's stderr when it fails. */
export async function must(cmd: string, args: string[], o: RunOptions = {}): Promise<string> {
  const r = await runCmd(cmd, args, o);
  if (r.code !== 0) {
    throw new AmbitError('LOCAL_EXEC', `${cmd} ${args.join(' ')} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim()}`);
  }
  return r.stdout;
}

/** Best effort (clean-up paths): never throws, returns whether it worked. */
export async function tryCmd(cmd: string, args: string[], o: RunOptions = {}): Promise<boolean> {
  try {
    return (await runCmd(cmd, args, o)).code === 0;
  } catch {
    return false;
  }
}

export function inNetns(netns: string, cmd: string, args: string[]): [string, string[]] {
  return ['ip', ['netns', 'exec', netns, cmd, ...args]];
}
