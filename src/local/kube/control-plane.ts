/**
 * A real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager
 * (the genuine binaries, see binaries.ts), certificates and kubeconfigs generated into `dir`.
 * For the kube tests and `ambit local up --kubernetes`.
 *
 * Layout of `dir`: pki/ (certificates, reused across restarts), etcd/ (data), logs/<process>.log,
 * pids.json, admin.kubeconfig, controller-manager.kubeconfig.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import * as https from 'node:https';
import * as net from 'node:net';
import { join, resolve } from 'node:path';
import { AmbitError, errorMessage } from '../../shared/errors.ts';
import { logger } from '../../shared/log.ts';
import { kubeBinaries, type KubeBinaries } from './binaries.ts';
import { writeKubeconfig } from './kubeconfig.ts';
import { ensurePki, type KubePki } from './pki.ts';
import { ControlPlaneProcess, killRecorded } from './processes.ts';

const log = logger('local.kube');

export const SERVICE_CLUSTER_IP_RANGE = '10.96.0.0/16';
const START_TIMEOUT_MS = 120_000;
const STOP_GRACE_MS = 10_000;

export interface KubeControlPlaneOptions {
  /** State directory (created; certificates and etcd data are kept across restarts). */
  dir: string;
  startTimeoutMs?: number;
}

export interface KubeControlPlane {
  dir: string;
  /** Admin kubeconfig (system:masters). */
  kubeconfig: string;
  /** https://127.0.0.1:<port> */
  server: string;
  /** Directory holding the matching kubectl (put it first on PATH). */
  kubectlDir: string;
  binaries: KubeBinaries;
  pki: KubePki;
  logsDir: string;
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (the OS picks it; the short race with other binders is accepted). */
export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => res(port));
    });
  });
}

/** GET `path` on the API server as admin; resolves the status code (0 when unreachable). */
function adminGet(server: string, pki: KubePki, path: string): Promise<number> {
  return new Promise((res) => {
    const req = https.get(server + path, {
      ca: readFileSync(pki.caCert), cert: readFileSync(pki.adminCert), key: readFileSync(pki.adminKey), timeout: 5000,
    }, (r) => { r.resume(); res(r.statusCode ?? 0); });
    req.on('timeout', () => req.destroy());
    req.on('error', () => res(0));
  });
}

export async function startKubeControlPlane(o: KubeControlPlaneOptions): Promise<KubeControlPlane> {
  const dir = resolve(o.dir);
  const binaries = kubeBinaries();
  const logsDir = join(dir, 'logs');
  mkdirSync(logsDir, { recursive: true });
  await killRecorded(dir); // whatever a crashed earlier run in this dir left behind
  const pki = await ensurePki(join(dir, 'pki'));
  const [etcdPort, etcdPeerPort, apiPort] = [await freePort(), await freePort(), await freePort()];
  const etcdUrl = `https://127.0.0.1:${etcdPort}`;
  const server = `https://127.0.0.1:${apiPort}`;
  const kubeconfig = join(dir, 'admin.kubeconfig');
  const kcmKubeconfig = join(dir, 'controller-manager.kubeconfig');
  writeKubeconfig({ file: kubeconfig, server, caFile: pki.caCert, certFile: pki.adminCert, keyFile: pki.adminKey, user: 'admin' });
  writeKubeconfig({ file: kcmKubeconfig, server, caFile: pki.caCert, certFile: pki.controllerManagerCert, keyFile: pki.controllerManagerKey, user: 'system:kube-controller-manager' });

  const procs: ControlPlaneProcess[] = [];
  const stop = async () => {
    for (const p of [...procs].reverse()) await p.stop(STOP_GRACE_MS);
    await killRecorded(dir);
    log.info('control plane stopped', { dir });
  };

  try {
    procs.push(new ControlPlaneProcess(dir, 'etcd', join(binaries.etcdBinDir, 'etcd'), [
      '--name=ambit', `--data-dir=${join(dir, 'etcd')}`,
      `--listen-client-urls=${etcdUrl}`, `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=http://127.0.0.1:${etcdPeerPort}`, `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
      `--initial-cluster=ambit=http://127.0.0.1:${etcdPeerPort}`,
      `--cert-file=${pki.servingCert}`, `--key-file=${pki.servingKey}`, `--trusted-ca-file=${pki.caCert}`, '--client-cert-auth',
      // A throw-away test cluster: skipping fsync makes it several times faster on slow disks.
      '--unsafe-no-fsync', '--log-level=warn',
    ]));
    procs.push(new ControlPlaneProcess(dir, 'kube-apiserver', join(binaries.kubeBinDir, 'kube-apiserver'), [
      '--bind-address=127.0.0.1', `--secure-port=${apiPort}`, '--advertise-address=127.0.0.1',
      `--etcd-servers=${etcdUrl}`, `--etcd-cafile=${pki.caCert}`, `--etcd-certfile=${pki.etcdClientCert}`, `--etcd-keyfile=${pki.etcdClientKey}`,
      `--tls-cert-file=${pki.servingCert}`, `--tls-private-key-file=${pki.servingKey}`, `--client-ca-file=${pki.caCert}`,
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${pki.saPub}`, `--service-account-signing-key-file=${pki.saKey}`,
      `--service-cluster-ip-range=${SERVICE_CLUSTER_IP_RANGE}`,
      '--authorization-mode=Node,RBAC', '--allow-privileged=true',
      // The API server listens on loopback only; an Endpoints/EndpointSlice for 127.0.0.1 is invalid.
      '--endpoint-reconciler-type=none',
      '--profiling=false',
    ]));
    procs.push(new ControlPlaneProcess(dir, 'kube-controller-manager', join(binaries.kubeBinDir, 'kube-controller-manager'), [
      // No serving port (0): nothing to collide with other instances; readiness is seen through the API.
      `--kubeconfig=${kcmKubeconfig}`, '--secure-port=0',
      '--controllers=*', '--leader-elect=false', '--use-service-account-credentials=true',
      `--service-account-private-key-file=${pki.saKey}`, `--root-ca-file=${pki.caCert}`,
      `--cluster-signing-cert-file=${pki.caCert}`, `--cluster-signing-key-file=${pki.caKey}`,
      `--service-cluster-ip-range=${SERVICE_CLUSTER_IP_RANGE}`,
      '--profiling=false',
    ]));
    await waitReady(server, pki, procs, o.startTimeoutMs ?? START_TIMEOUT_MS);
  } catch (err) {
    await stop().catch((e) => log.warn('clean-up after a failed start failed', { error: errorMessage(e) }));
    throw err;
  }
  log.info('control plane ready', { server, kubeconfig, version: binaries.kubeVersion });
  return { dir, kubeconfig, server, kubectlDir: binaries.kubeBinDir, binaries, pki, logsDir, stop };
}

/**
 * Ready = /readyz answers 200 and the `default` ServiceAccount of `default` exists (made by the
 * controller-manager; without it the API server refuses pods there). Fails early when a process exits.
 */
async function waitReady(server: string, pki: KubePki, procs: ControlPlaneProcess[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const steps = ['/readyz', '/api/v1/namespaces/default/serviceaccounts/default'];
  for (const path of steps) {
    for (;;) {
      const dead = procs.find((p) => p.exit);
      if (dead) throw dead.failure();
      if (await adminGet(server, pki, path) === 200) break;
      if (Date.now() > deadline) {
        throw new AmbitError('KUBE_START_TIMEOUT', `the control plane at ${server} did not answer ${path} with 200 within ${timeoutMs} ms; see the logs in ${join(procs[0].logFile, '..')}`);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** Stops whatever a (possibly crashed) control plane in `dir` left running. */
export async function stopKubeControlPlane(dir: string): Promise<void> {
  await killRecorded(resolve(dir));
}
