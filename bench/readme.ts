/**
 * Replaces the results part of bench/README.md (between the two markers) with the file given as
 * argument (run.sh all writes it: machine, command, tables). The rest of the README is kept.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const START = '<!-- results:start (written by bench/run.sh all) -->';
const END = '<!-- results:end -->';
const readme = join(import.meta.dirname, 'README.md');
const results = readFileSync(process.argv[2], 'utf8').trimEnd();
const text = readFileSync(readme, 'utf8');
const a = text.indexOf(START);
const b = text.indexOf(END);
if (a < 0 || b < a) {
  process.stderr.write(`bench/README.md has no "${START}" ... "${END}" section; add the two markers where the results go\n`);
  process.exit(1);
}
writeFileSync(readme, `${text.slice(0, a + START.length)}\n${results}\n${text.slice(b)}`);
