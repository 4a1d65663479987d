/**
 * `ambit`: one binary, many subcommands. Each subcommand lives in its own module and is loaded
 * only when asked for, so `ambit --help` and the short-lived commands stay fast.
 */
import { AmbitError, errorMessage } from '../shared/errors.ts';

type Command = { summary: string; load: () => Promise<{ run(argv: string[]): Promise<number> }> };

const commands: Record<string, Command> = {
  local: { summary: 'run a whole mesh on this machine (nodes and pods in network namespaces)', load: () => import('./local.ts') },
  controller: { summary: 'run the controller (config push and certificate authority)', load: () => import('./controller.ts') },
  agent: { summary: 'run a node agent (the ztunnel of one node)', load: () => import('./agent.ts') },
  'ztunnel-config': { summary: "show a node agent's workloads, services, policies, certificates, connections", load: () => import('./ztunnel-config.ts') },
  explain: { summary: 'explain the route and policy decision for a connection from a pod', load: () => import('./explain.ts') },
  'cni-install': { summary: 'install ambit-cni on this node and keep it chained into the primary CNI config', load: () => import('./cni-install.ts') },
  'cni-uninstall': { summary: 'take ambit-cni out of the CNI config and bin dirs', load: async () => ({ run: (await import('./cni-install.ts')).runUninstall }) },
};

function usage(): string {
  const lines = ['usage: ambit <command> [flags]', '', 'commands:'];
  for (const [name, c] of Object.entries(commands)) lines.push(`  ${name.padEnd(18)} ${c.summary}`);
  lines.push('', "Run 'ambit <command> --help' for a command's flags.");
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage() + '\n');
    return name === undefined ? 2 : 0;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`ambit: unknown command "${name}"\n\n${usage()}\n`);
    return 2;
  }
  const mod = await command.load();
  return mod.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    const code = err instanceof AmbitError ? ` [${err.code}]` : '';
    process.stderr.write(`ambit: ${errorMessage(err)}${code}\n`);
    process.exitCode = 1;
  },
);
