/**
 * `ambit cni-install` / `ambit cni-uninstall`: what the CNI installer DaemonSet runs on each node
 * (see src/cni/installer). Install keeps watching until SIGTERM unless --once.
 */
import { parseArgs } from 'node:util';
import { errorMessage } from '../shared/errors.ts';
import { logger, setLogFormat, setLogLevels } from '../shared/log.ts';
import { CniInstaller } from '../cni/installer/installer.ts';
import type { WatchEvent } from '../cni/installer/installer.ts';
import { OWN_ROOT } from '../cni/installer/plugin-binary.ts';
import { PLUGIN_KUBECONFIG_NAME, SA_DIR, pluginKubeconfig, type PluginKubeconfig } from '../cni/installer/plugin-kubeconfig.ts';

const log = logger('cni-install');

export const DEFAULT_CONF_DIR = '/etc/cni/net.d';
export const DEFAULT_BIN_DIR = '/opt/cni/bin';
export const DEFAULT_AGENT_SOCKET = '/var/run/ambit/ztunnel.sock';

const USAGE = `usage: ambit cni-install [--conf-dir DIR] [--bin-dir DIR] [--ambit-root DIR | --plugin-source FILE]
                         [--agent-socket PATH] [--log-file PATH] [--object-store DIR] [--set KEY=JSON]...
                         [--plugin-kubeconfig [--host-conf-dir DIR] [--api-server URL] [--token-file F] [--ca-file F]]
                         [--once [--timeout S]] [--poll-ms MS] [--uninstall-on-exit]
       ambit cni-uninstall [--conf-dir DIR] [--bin-dir DIR]

Installs ambit-cni into the CNI bin dir and chains it into the node's primary CNI config (the
lexically first *.conf/*.conflist/*.json of the conf dir, the one the container runtime uses; a .conf
becomes a .conflist). Then keeps watching: another CNI rewriting its config is chained again.
Waits (and says so) while the conf dir has no config yet.

  --conf-dir        CNI config dir (default ${DEFAULT_CONF_DIR})
  --bin-dir         CNI bin dir (default ${DEFAULT_BIN_DIR})
  --ambit-root      Ambit install on the host that the installed shim runs (default: this one, ${OWN_ROOT})
  --plugin-source   install this file as ambit-cni, byte for byte, instead of the shim
  --agent-socket    node agent's CNI hand-off socket (default ${DEFAULT_AGENT_SOCKET})
  --log-file        file the plugin logs to (default: the runtime's stderr only)
  --object-store    pod metadata directory (ambit local)
  --plugin-kubeconfig  write <conf-dir>/${PLUGIN_KUBECONFIG_NAME} from this pod's ServiceAccount (kept current
                    as the token rotates) and point the plugin at it: ambit-cni reads pod and namespace
                    labels from the API server with it (a real cluster)
  --host-conf-dir   the conf dir's path on the node, as the plugin sees it (default ${DEFAULT_CONF_DIR})
  --api-server      API server URL (default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)
  --token-file, --ca-file  credentials to copy (default the mounted ServiceAccount in ${SA_DIR})
  --set KEY=JSON    any other key of our plugin entry, e.g. --set 'kubeconfig="/etc/ambit/kubeconfig"'
  --once            install once and exit (waiting for a config up to --timeout seconds, default 60)
  --poll-ms         re-check interval besides inotify (default 5000)
  --uninstall-on-exit  uninstall on SIGTERM/SIGINT (when the DaemonSet is deleted)
  --log-format/--log-level  as for the other commands`;

const COMMON = {
  'conf-dir': { type: 'string', default: DEFAULT_CONF_DIR },
  'bin-dir': { type: 'string', default: DEFAULT_BIN_DIR },
  'log-format': { type: 'string' },
  'log-level': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

function fail(cmd: string, msg: string): number {
  process.stderr.write(`ambit ${cmd}: ${msg}\n${USAGE}\n`);
  return 2;
}

function applyLogFlags(values: { 'log-format'?: string; 'log-level'?: string }): string | undefined {
  const f = values['log-format'];
  if (f !== undefined && f !== 'text' && f !== 'json') return `--log-format must be text or json, got "${f}"`;
  if (f) setLogFormat(f);
  if (values['log-level'] !== undefined) {
    try { setLogLevels(values['log-level']); } catch (err) { return `--log-level: ${errorMessage(err)}`; }
  }
  return undefined;
}

export async function run(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        ...COMMON,
        'ambit-root': { type: 'string' },
        'plugin-source': { type: 'string' },
        'agent-socket': { type: 'string', default: DEFAULT_AGENT_SOCKET },
        'log-file': { type: 'string' },
        'object-store': { type: 'string' },
        'plugin-kubeconfig': { type: 'boolean' },
        'host-conf-dir': { type: 'string', default: DEFAULT_CONF_DIR },
        'api-server': { type: 'string' },
        'token-file': { type: 'string' },
        'ca-file': { type: 'string' },
        set: { type: 'string', multiple: true },
        once: { type: 'boolean' },
        timeout: { type: 'string', default: '60' },
        'poll-ms': { type: 'string', default: '5000' },
        'uninstall-on-exit': { type: 'boolean' },
      },
      strict: true,
    }));
  } catch (err) {
    return fail('cni-install', (err as Error).message);
  }
  if (values.help) { process.stdout.write(USAGE + '\n'); return 0; }
  const logProblem = applyLogFlags(values);
  if (logProblem) return fail('cni-install', logProblem);
  if (values['ambit-root'] && values['plugin-source']) return fail('cni-install', 'give --ambit-root or --plugin-source, not both');
  const timeoutS = Number(values.timeout);
  const pollMs = Number(values['poll-ms']);
  if (!(timeoutS > 0)) return fail('cni-install', `--timeout must be a positive number of seconds, got "${values.timeout}"`);
  if (!Number.isInteger(pollMs) || pollMs < 100) return fail('cni-install', `--poll-ms must be a whole number >= 100, got "${values['poll-ms']}"`);

  const settings: Record<string, unknown> = { agentSocket: values['agent-socket'] };
  if (values['log-file']) settings.logFile = values['log-file'];
  if (values['object-store']) settings.objectStore = values['object-store'];
  for (const kv of values.set ?? []) {
    const eq = kv.indexOf('=');
    if (eq <= 0) return fail('cni-install', `--set ${JSON.stringify(kv)}: expected KEY=JSON`);
    const key = kv.slice(0, eq);
    if (key === 'type') return fail('cni-install', '--set type=...: the type is always ambit-cni');
    try { settings[key] = JSON.parse(kv.slice(eq + 1)); } catch (err) {
      return fail('cni-install', `--set ${key}: the value is not JSON (${errorMessage(err)}); quote strings, e.g. ${key}='"text"'`);
    }
  }
  let kubeconfig: PluginKubeconfig | undefined;
  if (values['plugin-kubeconfig']) {
    try {
      kubeconfig = pluginKubeconfig({
        confDir: values['conf-dir'], hostConfDir: values['host-conf-dir'],
        server: values['api-server'], tokenFile: values['token-file'], caFile: values['ca-file'],
      });
    } catch (err) {
      return fail('cni-install', errorMessage(err));
    }
  } else if (values['api-server'] || values['token-file'] || values['ca-file']) {
    return fail('cni-install', '--api-server, --token-file and --ca-file only go with --plugin-kubeconfig');
  }
  const installer = new CniInstaller({
    confDir: values['conf-dir'],
    binDir: values['bin-dir'],
    plugin: values['plugin-source'] ? { kind: 'file', path: values['plugin-source'] } : { kind: 'shim', ambitRoot: values['ambit-root'] ?? OWN_ROOT },
    settings,
    kubeconfig,
  });
  try {
    installer.entry();   // bad settings fail now, not in the loop
  } catch (err) {
    return fail('cni-install', errorMessage(err));
  }

  if (values.once) {
    let resolveDone!: (e: WatchEvent) => void;
    const first = new Promise<WatchEvent>((r) => { resolveDone = r; });
    let last: WatchEvent | undefined;
    const watcher = installer.watch({
      pollMs,
      onEvent: (e) => {
        last = e;
        // Keep waiting only while there is no config at all; anything else is the answer.
        if (e.kind === 'installed' || e.code !== 'CNI_INSTALL_NO_CONFIG') resolveDone(e);
      },
    });
    const timer = setTimeout(() => resolveDone(last ?? { kind: 'waiting', code: 'CNI_INSTALL_NO_CONFIG', message: `no CNI config in ${values['conf-dir']}` }), timeoutS * 1000);
    const e = await first;
    clearTimeout(timer);
    await watcher.stop();
    if (e.kind === 'installed') {
      process.stdout.write(`ambit-cni chained into ${values['conf-dir']}/${e.outcome.file} (${e.outcome.action})\n`);
      return 0;
    }
    process.stderr.write(`ambit cni-install: ${e.message} [${e.code}]${e.code === 'CNI_INSTALL_NO_CONFIG' ? ` (gave up after ${timeoutS}s)` : ''}\n`);
    return 1;
  }

  const watcher = installer.watch({ pollMs });
  log.info('watching the CNI config dir', { confDir: values['conf-dir'], binDir: values['bin-dir'] });
  await new Promise<void>((resolve) => {
    const onSignal = (sig: string) => { log.info('stopping', { signal: sig }); resolve(); };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  await watcher.stop();
  if (values['uninstall-on-exit']) return report(values['conf-dir'], installer.uninstall());
  return 0;
}

function report(confDir: string, out: ReturnType<CniInstaller['uninstall']>): number {
  for (const f of out.files) log.info('took ambit-cni out of a CNI config', { file: `${confDir}/${f.file}`, action: f.action });
  if (out.pluginRemoved) log.info('removed the ambit-cni plugin');
  if (out.kubeconfigRemoved) log.info('removed the ambit-cni kubeconfig');
  for (const e of out.errors) log.error(e);
  return out.errors.length ? 1 : 0;
}

export async function runUninstall(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: COMMON, strict: true }));
  } catch (err) {
    return fail('cni-uninstall', (err as Error).message);
  }
  if (values.help) { process.stdout.write(USAGE + '\n'); return 0; }
  const logProblem = applyLogFlags(values);
  if (logProblem) return fail('cni-uninstall', logProblem);
  const installer = new CniInstaller({ confDir: values['conf-dir'], binDir: values['bin-dir'], plugin: { kind: 'shim', ambitRoot: OWN_ROOT }, settings: {} });
  return report(values['conf-dir'], installer.uninstall());
}
