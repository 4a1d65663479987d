/**
 * `ambit controller (--manifests DIR | --kubernetes | --kubeconfig PATH) --ca-dir DIR --listen HOST:PORT [--trust-domain TD] [--root-namespace NS]`
 * Runs until SIGTERM/SIGINT, then stops gracefully (agents keep their config and reconnect later).
 */
import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import { Controller } from '../controller/controller.ts';
import { agentUsername } from '../controller/ca/token-review.ts';
import { logger } from '../shared/log.ts';

const log = logger('controller');

const USAGE = `usage: ambit controller (--manifests DIR | --kubernetes | --kubeconfig PATH) --ca-dir DIR --listen HOST:PORT
                        [--trust-domain TD] [--root-namespace NS] [--lease-namespace NS]
                        [--ca-secret NAME] [--agent-service-account NS/NAME] [--token-audience AUD]

  --manifests DIR      directory of Kubernetes manifests (YAML/JSON), watched for changes
  --kubernetes         watch the Kubernetes API of the cluster this pod runs in (its service account)
  --kubeconfig PATH    watch the Kubernetes API server of this kubeconfig's current context
  --lease-namespace NS namespace of the leader-election Lease, the CA Secret and the root
                       ConfigMap ambit-root-cert (default: $POD_NAMESPACE, the pod's namespace
                       in-cluster, else default); only the leader writes status
  --ca-secret NAME     (Kubernetes) keep the CA in this Secret: made from --ca-dir on first start,
                       loaded into --ca-dir after, so restarts and replicas share one root
  --agent-service-account NS/NAME
                       (Kubernetes) the node agents' service account, whose projected tokens may ask
                       for certificates (default ambit-system/ambit-agent)
  --token-audience AUD (Kubernetes) audience of the agents' tokens (default ambit-ca)
  --ca-dir DIR         CA files (ca-cert.pem, ca-key.pem, ...); a new root is created if empty
  --listen HOST:PORT   address of the agents' gRPC endpoint (mTLS), e.g. 10.99.0.1:15012
  --trust-domain TD    SPIFFE trust domain (default cluster.local)
  --root-namespace NS  namespace whose AuthorizationPolicy / PeerAuthentication apply mesh-wide
                       (default istio-system)`;

export function parseListen(value: string): { host: string; port: number } | undefined {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(value) ?? /^([^:]+):(\d+)$/.exec(value);
  if (!m) return undefined;
  const port = Number(m[2]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) return undefined;
  if (m[1] !== 'localhost' && isIP(m[1]) === 0 && !/^[a-zA-Z0-9.-]+$/.test(m[1])) return undefined;
  return { host: m[1], port };
}

export async function run(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        manifests: { type: 'string' },
        kubeconfig: { type: 'string' },
        kubernetes: { type: 'boolean' },
        'lease-namespace': { type: 'string' },
        'ca-secret': { type: 'string' },
        'agent-service-account': { type: 'string' },
        'token-audience': { type: 'string' },
        'ca-dir': { type: 'string' },
        listen: { type: 'string' },
        'trust-domain': { type: 'string' },
        'root-namespace': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    process.stderr.write(`ambit controller: ${(err as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const kube = values.kubeconfig !== undefined || values.kubernetes === true;
  if (kube && values.manifests !== undefined) {
    process.stderr.write(`ambit controller: --manifests and --${values.kubeconfig !== undefined ? 'kubeconfig' : 'kubernetes'} exclude each other: pick one source\n\n${USAGE}\n`);
    return 2;
  }
  const missing = [...(!kube && values.manifests === undefined ? ['manifests (or --kubernetes / --kubeconfig)'] : []), ...(['ca-dir', 'listen'] as const).filter((k) => !values[k])];
  if (missing.length > 0) {
    process.stderr.write(`ambit controller: missing ${missing.map((m) => `--${m}`).join(', ')}\n\n${USAGE}\n`);
    return 2;
  }
  const listen = parseListen(values.listen!);
  if (!listen) {
    process.stderr.write(`ambit controller: --listen ${JSON.stringify(values.listen)} is not HOST:PORT (e.g. 127.0.0.1:15012, [::1]:15012)\n\n${USAGE}\n`);
    return 2;
  }

  const rootNamespace = values['root-namespace'];
  if (rootNamespace !== undefined && (rootNamespace.length > 63 || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(rootNamespace))) {
    process.stderr.write(`ambit controller: --root-namespace ${JSON.stringify(rootNamespace)} is not a namespace name (lower-case letters, digits and '-', at most 63)\n\n${USAGE}\n`);
    return 2;
  }

  const kubeOnly = (['ca-secret', 'agent-service-account', 'token-audience'] as const).filter((k) => values[k] !== undefined);
  if (!kube && kubeOnly.length > 0) {
    process.stderr.write(`ambit controller: --${kubeOnly[0]} needs --kubernetes or --kubeconfig\n\n${USAGE}\n`);
    return 2;
  }
  const caSecret = values['ca-secret'];
  if (caSecret !== undefined && !/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(caSecret)) {
    process.stderr.write(`ambit controller: --ca-secret ${JSON.stringify(caSecret)} is not a Secret name (lower-case letters, digits, '-', '.')\n\n${USAGE}\n`);
    return 2;
  }
  const agentSa = values['agent-service-account'];
  const agentUser = agentSa === undefined ? undefined : agentUsername(agentSa);
  if (agentSa !== undefined && !agentUser) {
    process.stderr.write(`ambit controller: --agent-service-account ${JSON.stringify(agentSa)} is neither NS/NAME nor system:serviceaccount:NS:NAME\n\n${USAGE}\n`);
    return 2;
  }
  if (values['token-audience'] === '') {
    process.stderr.write(`ambit controller: --token-audience is empty\n\n${USAGE}\n`);
    return 2;
  }

  // Signals are handled from the start, so a SIGTERM that races the ready line still stops cleanly.
  let stopRequested: (() => void) | undefined;
  const stopped = new Promise<void>((resolve) => (stopRequested = resolve));
  const onSignal = (sig: string) => {
    log.info('stopping', { signal: sig });
    stopRequested?.();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    // Loaded only for the Kubernetes source: a controller on a manifest directory never loads the client.
    const source = kube
      ? new (await import('../controller/sources/kube/kube-source.ts')).KubeSource(values.kubeconfig !== undefined ? { kubeconfig: values.kubeconfig } : { inCluster: true }, {
        lease: values['lease-namespace'] ? { namespace: values['lease-namespace'] } : {},
        policy: { rootNamespace, trustDomain: values['trust-domain'] },
      })
      : undefined;
    const controller = await Controller.start({
      manifests: values.manifests ?? '',
      source,
      caDir: values['ca-dir']!,
      host: listen.host,
      port: listen.port,
      trustDomain: values['trust-domain'],
      rootNamespace,
      kube: {
        namespace: values['lease-namespace'],
        caSecret,
        agentUsername: agentUser,
        audience: values['token-audience'],
      },
    });
    const where = listen.host.includes(':') ? `[${listen.host}]:${controller.port}` : `${listen.host}:${controller.port}`;
    const from = source ? { kubernetes: source.client.server } : { manifests: values.manifests };
    log.info('controller ready', { listen: where, ...from, trustDomain: controller.trustDomain, rootNamespace: controller.rootNamespace });
    await stopped;
    await controller.stop();
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
  return 0;
}
