/** Policy benchmarks: connection rate with 0/100/1000 policies (local mesh) and agent memory with 1000 policies and workloads. */
import { runPolicyMemory } from './policy-memory.ts';
import { runPolicyRate } from './policy-rate.ts';

process.stdout.write(await runPolicyRate());
process.stdout.write('\n' + await runPolicyMemory());
