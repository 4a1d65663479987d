/** `ambit agent`: run the node agent of one node until SIGTERM/SIGINT, then drain. */
import { parseArgs } from 'node:util';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AmbitError } from '../shared/errors.ts';
import { logger, setLogFormat, setLogLevels } from '../shared/log.ts';
import { DEFAULT_TRUST_DOMAIN } from '../api/constants.ts';

const USAGE = `usage: ambit agent --node NAME --controller HOST:PORT (--creds-dir DIR | --token-file PATH --root-cert PATH)
                   --run-dir DIR
                   [--trust-domain TD] [--drain-ms MS] [--log-format text|json] [--log-level SPEC]
                   [--cluster-id ID]

  --node          name of the node this agent serves (its pods only)
  --controller    address of the controller's control-plane port (mTLS gRPC)
  --creds-dir     holds agent-cert.pem, agent-key.pem, root-cert.pem (the agent's node credential)
  --token-file    instead of --creds-dir, in a cluster: projected service account token (audience
                  ambit-ca) the controller checks with a TokenReview; read again for every call
  --root-cert     with --token-file: the mesh root certificate (ConfigMap ambit-root-cert)
  --run-dir       where the CNI hand-off socket (ztunnel.sock) and the pod records live
  --trust-domain  SPIFFE trust domain (default ${DEFAULT_TRUST_DOMAIN})
  --drain-ms      how long open connections may finish on shutdown (default 5000)
  --log-format    text (default) or json (one JSON object per line; also AMBIT_LOG_FORMAT=json)
  --log-level     LEVEL or COMPONENT:LEVEL list, e.g. info,access:off (also AMBIT_LOG_LEVEL)
  --cluster-id    cluster name in the metrics' source_cluster/destination_cluster (default Kubernetes)`;

export async function run(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        node: { type: 'string' },
        controller: { type: 'string' },
        'creds-dir': { type: 'string' },
        'token-file': { type: 'string' },
        'root-cert': { type: 'string' },
        'run-dir': { type: 'string' },
        'trust-domain': { type: 'string', default: DEFAULT_TRUST_DOMAIN },
        'drain-ms': { type: 'string', default: '5000' },
        'log-format': { type: 'string' },
        'log-level': { type: 'string' },
        'cluster-id': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`ambit agent: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const token = values['token-file'] !== undefined || values['root-cert'] !== undefined;
  if (token && values['creds-dir'] !== undefined) {
    process.stderr.write(`ambit agent: --creds-dir and --token-file/--root-cert exclude each other: pick one credential\n${USAGE}\n`);
    return 2;
  }
  for (const flag of ['node', 'controller', ...(token ? ['token-file', 'root-cert'] as const : ['creds-dir'] as const), 'run-dir'] as const) {
    if (!values[flag]) {
      process.stderr.write(`ambit agent: missing --${flag}\n${USAGE}\n`);
      return 2;
    }
  }
  const drainMs = Number(values['drain-ms']);
  if (!Number.isInteger(drainMs) || drainMs < 0) {
    process.stderr.write(`ambit agent: --drain-ms must be a whole number of milliseconds, got "${values['drain-ms']}"\n`);
    return 2;
  }
  const format = values['log-format'];
  if (format !== undefined && format !== 'text' && format !== 'json') {
    process.stderr.write(`ambit agent: --log-format must be text or json, got "${format}"\n`);
    return 2;
  }
  if (format) setLogFormat(format);
  if (values['log-level'] !== undefined) {
    try {
      setLogLevels(values['log-level']);
    } catch (err) {
      process.stderr.write(`ambit agent: --log-level: ${(err as Error).message}\n`);
      return 2;
    }
  }
  const creds = token ? await readTokenCreds(values['token-file']!, values['root-cert']!) : await readCreds(values['creds-dir']!);
  const { NodeAgent } = await import('../ztunnel/agent.ts');
  const agent = new NodeAgent({
    node: values.node!,
    controller: values.controller!,
    runDir: values['run-dir']!,
    trustDomain: values['trust-domain']!,
    cluster: values['cluster-id'],
    ...creds,
  });
  await agent.start();
  const log = logger('agent');
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info('shutting down', { signal, drainMs });
      agent.stop(drainMs).finally(resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  return 0;
}

/** The token is only checked to be readable here; the config client reads it for every call. */
async function readTokenCreds(tokenFile: string, rootCert: string): Promise<{ tokenFile: string; rootsPem: string }> {
  try {
    await readFile(tokenFile, 'utf8');
  } catch (err) {
    throw new AmbitError('ZT_BAD_CREDS', `cannot read the agent token ${tokenFile}: ${(err as Error).message}; check --token-file (a projected service account token with audience ambit-ca)`);
  }
  let rootsPem: string;
  try {
    rootsPem = await readFile(rootCert, 'utf8');
  } catch (err) {
    throw new AmbitError('ZT_BAD_CREDS', `cannot read the mesh root certificate ${rootCert}: ${(err as Error).message}; check --root-cert (the ConfigMap ambit-root-cert published by the controller)`);
  }
  if (!rootsPem.includes('-----BEGIN CERTIFICATE-----')) {
    throw new AmbitError('ZT_BAD_CREDS', `${rootCert} holds no PEM certificate; check --root-cert (the ConfigMap ambit-root-cert published by the controller)`);
  }
  return { tokenFile, rootsPem };
}

async function readCreds(dir: string): Promise<{ certPem: string; keyPem: string; rootsPem: string }> {
  const read = async (name: string) => {
    try {
      return await readFile(join(dir, name), 'utf8');
    } catch (err) {
      throw new AmbitError('ZT_BAD_CREDS', `cannot read the agent credential ${join(dir, name)}: ${(err as Error).message}; ` +
        'check --creds-dir (it needs agent-cert.pem, agent-key.pem and root-cert.pem issued by the controller CA)');
    }
  };
  return { certPem: await read('agent-cert.pem'), keyPem: await read('agent-key.pem'), rootsPem: await read('root-cert.pem') };
}
