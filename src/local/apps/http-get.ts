/**
 * A tiny HTTP client for pods (no curl needed): `node http-get.ts URL [--count N] [--timeout MS]`.
 * Prints each response body on one line; a new connection per request. Exit 0 only if every
 * request got a 2xx answer; 1 otherwise (the reason on stderr).
 */
import { request } from 'node:http';

function usage(): never {
  process.stderr.write('usage: http-get URL [--count N] [--timeout MS] [--header K:V]...\n');
  process.exit(2);
}

const argv = process.argv.slice(2);
let url: string | undefined;
let count = 1;
let timeoutMs = 5000;
const headers: Record<string, string> = {};
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === '--count') count = Number(argv[++i]);
  else if (a === '--timeout') timeoutMs = Number(argv[++i]);
  else if (a === '--header') { const [k, ...v] = (argv[++i] ?? '').split(':'); headers[k.trim()] = v.join(':').trim(); }
  else if (!url && !a.startsWith('--')) url = a;
  else usage();
}
if (!url || !Number.isInteger(count) || count < 1) usage();

function once(target: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(target, { agent: false, headers, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

let failed = 0;
for (let i = 0; i < count; i++) {
  try {
    const r = await once(url);
    process.stdout.write(r.body.replace(/\n/g, ' ') + '\n');
    if (r.status < 200 || r.status > 299) { failed++; process.stderr.write(`http-get: ${url}: HTTP ${r.status}\n`); }
  } catch (err) {
    failed++;
    process.stderr.write(`http-get: ${url}: ${(err as Error).message}\n`);
  }
}
process.exitCode = failed === 0 ? 0 : 1;
