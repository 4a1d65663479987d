/**
 * Metrics and access logs on a real two-node local mesh (issue 3, "Done means": metrics scraped
 * after a known transfer show the right counts, bytes and labels for both reporters; access log
 * records match). A client Deployment on node-1 sends a known number of bytes to a service whose
 * Deployment runs on node-2; both agents' :15020/metrics (node netns, reached at the node IPs) are
 * scraped while the connection is open and after it closed, and compared with what the app itself
 * counted; then the agents' "connection complete" records. Debug: logs in /run/ambit/<instance>/logs.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AMBIT, ambitLocal, HTTP_GET, newInstance, sweepLeftovers } from './local-helpers.ts';

const INSTANCE = newInstance();
const STATE = `/run/ambit/${INSTANCE}`;
const hint = () => `\n(instance ${INSTANCE}; logs in ${STATE}/logs)`;
const ambit = (args: string[], input?: string) => ambitLocal(INSTANCE, args, input);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const TD = 'cluster.local';

const MANIFESTS = `
apiVersion: v1
kind: Namespace
metadata: { name: metrics, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: frontend, namespace: metrics }
spec:
  replicas: 1
  selector: { matchLabels: { app: web } }
  template:
    metadata: { labels: { app: web, version: v3 } }
    spec: { nodeName: node-1, serviceAccountName: front-sa, containers: [{ name: sleep, image: ambit/sleep }] }
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: backend, namespace: metrics }
spec:
  replicas: 1
  selector: { matchLabels: { app: api } }
  template:
    metadata: { labels: { app: api, version: v7 } }
    spec: { nodeName: node-2, serviceAccountName: back-sa, containers: [{ name: echo, image: ambit/echo, ports: [{ containerPort: 8080 }] }] }
---
apiVersion: v1
kind: Service
metadata: { name: api-svc, namespace: metrics }
spec: { selector: { app: api }, ports: [{ name: http, port: 80, targetPort: 8080 }] }
---
apiVersion: v1
kind: Pod
metadata: { name: intruder, namespace: metrics, labels: { app: intruder } }
spec: { nodeName: node-1, serviceAccountName: intruder-sa, containers: [{ name: sleep, image: ambit/sleep }] }
`;

const DENY_INTRUDER = `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-intruder, namespace: metrics }
spec:
  selector: { matchLabels: { app: api } }
  action: DENY
  rules: [{ from: [{ source: { principals: ["${TD}/ns/metrics/sa/intruder-sa"] } }] }]
`;

/**
 * One HTTP POST over one TCP connection, in two parts: headers + FIRST body bytes, then (after a
 * line on stdin) the REST. Prints what the app itself counted: after the first part, and at close.
 */
const TRANSFER = `const net = require('node:net');
const [host, port, first, rest] = process.argv.slice(1).map((v, i) => i === 0 ? v : Number(v));
const head = 'POST /transfer HTTP/1.1\\r\\nhost: ' + host + '\\r\\ncontent-length: ' + (first + rest) + '\\r\\nconnection: close\\r\\n\\r\\n';
let read = 0, local = 0;
const s = net.connect(port, host, () => {
  local = s.localPort;
  s.write(head);
  s.write(Buffer.alloc(first, 97), () => console.log(JSON.stringify({ phase: 'partial', local, written: s.bytesWritten })));
  process.stdin.once('data', () => s.end(Buffer.alloc(rest, 98)));
});
s.on('data', (d) => { read += d.length; });
s.on('error', (e) => { console.error(e.message); process.exit(1); });
s.on('close', () => { console.log(JSON.stringify({ phase: 'done', local, written: s.bytesWritten, read })); process.exit(0); });`;

interface PodJson { metadata: { name: string; namespace: string; labels?: Record<string, string> }; status: { podIP: string } }
interface Sample { name: string; labels: Record<string, string>; value: number }

/** Prometheus text exposition -> samples (enough of the format for what the agent writes). */
function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

let pods: PodJson[] = [];
let vip = '';
const nodeIp: Record<string, string> = {};
const podBy = (app: string) => {
  const p = pods.find((x) => x.metadata.labels?.app === app);
  assert.ok(p, `a pod with app=${app}${hint()}`);
  return p;
};
const key = (p: PodJson) => `${p.metadata.namespace}/${p.metadata.name}`;

async function scrape(node: string): Promise<Sample[]> {
  const res = await fetch(`http://${nodeIp[node]}:15020/metrics`);
  assert.equal(res.status, 200, `metrics of ${node}${hint()}`);
  assert.match(res.headers.get('content-type') ?? '', /text\/plain/);
  return parseMetrics(await res.text());
}

/** Sum of a metric over the series matching `match`. */
function sum(samples: Sample[], name: string, match: Record<string, string>): number {
  return samples.filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v)).reduce((n, s) => n + s.value, 0);
}

/** Poll a node's metrics until `ok` holds (bytes cross two agents asynchronously). */
async function until(node: string, ok: (s: Sample[]) => boolean, what: string, ms = 10_000): Promise<Sample[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const s = await scrape(node);
    if (ok(s)) return s;
    if (Date.now() > deadline) assert.fail(`${node}: ${what} not seen within ${ms} ms${hint()}`);
    await sleep(200);
  }
}

const EDGE = { source_workload: 'frontend', destination_workload: 'backend', source_workload_namespace: 'metrics' };
const TCP = ['istio_tcp_connections_opened_total', 'istio_tcp_connections_closed_total', 'istio_tcp_received_bytes_total', 'istio_tcp_sent_bytes_total', 'istio_tcp_connections_failed_total'];
const snapshot = (s: Sample[], reporter: string) => Object.fromEntries(TCP.map((n) => [n, sum(s, n, { ...EDGE, reporter })]));

function accessLines(node: string): string[] {
  return readFileSync(join(STATE, 'logs', `agent-${node}.log`), 'utf8').split('\n').filter((l) => l.includes(' access connection complete'));
}

describe(`metrics and access logs (instance ${INSTANCE})`, () => {
  before(() => {
    sweepLeftovers();
    const up = ambit(['up', '--nodes', '2']);
    assert.equal(up.code, 0, up.stdout + up.stderr + hint());
    const a = ambit(['apply', '-f', '-'], MANIFESTS);
    assert.equal(a.code, 0, a.stdout + a.stderr + hint());
    pods = (JSON.parse(ambit(['get', 'pods', '-n', 'metrics', '-o', 'json']).stdout) as { items: PodJson[] }).items;
    vip = (JSON.parse(ambit(['get', 'services', '-n', 'metrics', '-o', 'json']).stdout) as { items: { spec: { clusterIP: string } }[] }).items[0].spec.clusterIP;
    const nodes = (JSON.parse(ambit(['get', 'nodes', '-o', 'json']).stdout) as { items: { metadata: { name: string }; status: { addresses: { type: string; address: string }[] } }[] }).items;
    for (const n of nodes) nodeIp[n.metadata.name] = n.status.addresses.find((x) => x.type === 'InternalIP')!.address;
  });
  after(() => { ambit(['down']); });

  it('a known transfer: counts, bytes (while open and at close) and labels for both reporters; access records match', async () => {
    const client = podBy('web');
    const server = podBy('api');
    // Config has reached both agents once a request goes through.
    const deadline = Date.now() + 20_000;
    while (ambit(['exec', key(client), '--', 'node', HTTP_GET, `http://${vip}/warm-up`, '--timeout', '3000']).code !== 0) {
      if (Date.now() > deadline) assert.fail(`warm-up never succeeded${hint()}`);
      await sleep(250);
    }
    // Baselines: the warm-up went through the same label sets; wait until it is counted as closed.
    const base1 = snapshot(await until('node-1', (s) => sum(s, 'istio_tcp_connections_closed_total', { ...EDGE, reporter: 'source' }) >= 1, 'warm-up closed'), 'source');
    const base2 = snapshot(await until('node-2', (s) => sum(s, 'istio_tcp_connections_closed_total', { ...EDGE, reporter: 'destination' }) >= 1, 'warm-up closed'), 'destination');

    const FIRST = 300_000;
    const REST = 1_234_567;
    const child = spawn(AMBIT, ['local', 'exec', key(client), '--', 'node', '-e', TRANSFER, vip, '80', String(FIRST), String(REST)],
      { env: { ...process.env, AMBIT_LOCAL_INSTANCE: INSTANCE }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const line = async (phase: string) => {
      const end = Date.now() + 20_000;
      for (;;) {
        const l = out.split('\n').find((x) => x.includes(`"phase":"${phase}"`));
        if (l) return JSON.parse(l) as { local: number; written: number; read?: number };
        if (Date.now() > end || child.exitCode !== null) assert.fail(`transfer never reached ${phase}: ${out} ${err}${hint()}`);
        await sleep(50);
      }
    };
    let partial: { local: number; written: number };
    let done: { local: number; written: number; read?: number };
    try {
      partial = await line('partial');
      // Open connection: its bytes so far show up at scrape, on both sides.
      await until('node-1', (s) => snapshot(s, 'source').istio_tcp_received_bytes_total - base1.istio_tcp_received_bytes_total === partial.written, `open connection's ${partial.written} request bytes`);
      const open2 = await until('node-2', (s) => snapshot(s, 'destination').istio_tcp_received_bytes_total - base2.istio_tcp_received_bytes_total === partial.written, `open connection's ${partial.written} request bytes`);
      assert.equal(snapshot(open2, 'destination').istio_tcp_connections_opened_total - base2.istio_tcp_connections_opened_total, 1);
      assert.equal(snapshot(open2, 'destination').istio_tcp_connections_closed_total - base2.istio_tcp_connections_closed_total, 0, 'still open');
      assert.ok(sum(open2, 'ambit_agent_connections_open', {}) >= 1);
      child.stdin.write('go\n');
      done = await line('done');
    } finally {
      child.stdin.end();
      if (child.exitCode === null) await new Promise((r) => child.once('exit', r));
    }
    assert.equal(done.written, partial.written + REST);
    assert.ok(done.read! > 0, 'the echo answered');
    const want = { opened: 1, closed: 1, failed: 0, received: done.written, sent: done.read! };
    const delta = (s: Sample[], reporter: string, b: Record<string, number>) => {
      const n = snapshot(s, reporter);
      return {
        opened: n.istio_tcp_connections_opened_total - b.istio_tcp_connections_opened_total,
        closed: n.istio_tcp_connections_closed_total - b.istio_tcp_connections_closed_total,
        failed: n.istio_tcp_connections_failed_total - b.istio_tcp_connections_failed_total,
        received: n.istio_tcp_received_bytes_total - b.istio_tcp_received_bytes_total,
        sent: n.istio_tcp_sent_bytes_total - b.istio_tcp_sent_bytes_total,
      };
    };
    const s1 = await until('node-1', (s) => delta(s, 'source', base1).closed >= 1, 'transfer closed');
    const s2 = await until('node-2', (s) => delta(s, 'destination', base2).closed >= 1, 'transfer closed');
    process.stdout.write(`# transfer: app wrote ${done.written} B, read ${done.read} B; source ${JSON.stringify(delta(s1, 'source', base1))}; destination ${JSON.stringify(delta(s2, 'destination', base2))}\n`);
    assert.deepEqual(delta(s1, 'source', base1), want, `source reporter (node-1)${hint()}`);
    assert.deepEqual(delta(s2, 'destination', base2), want, `destination reporter (node-2)${hint()}`);

    // The whole label set, identical on both sides but for the reporter.
    const labels = {
      source_workload: 'frontend', source_workload_namespace: 'metrics', source_principal: `spiffe://${TD}/ns/metrics/sa/front-sa`,
      source_app: 'web', source_version: 'v3', source_canonical_service: 'web', source_canonical_revision: 'v3', source_cluster: 'Kubernetes',
      destination_workload: 'backend', destination_workload_namespace: 'metrics', destination_principal: `spiffe://${TD}/ns/metrics/sa/back-sa`,
      destination_app: 'api', destination_version: 'v7', destination_canonical_service: 'api', destination_canonical_revision: 'v7',
      destination_cluster: 'Kubernetes', destination_service: 'api-svc.metrics.svc.cluster.local', destination_service_namespace: 'metrics',
      destination_service_name: 'api-svc', request_protocol: 'tcp', response_flags: '-', connection_security_policy: 'mutual_tls',
    };
    for (const [node, samples, reporter] of [['node-1', s1, 'source'], ['node-2', s2, 'destination']] as const) {
      const series = samples.filter((s) => s.name === 'istio_tcp_connections_closed_total' && s.labels.reporter === reporter && s.labels.source_workload === 'frontend');
      assert.equal(series.length, 1, `one closed series for the edge on ${node}: ${JSON.stringify(series)}`);
      assert.deepEqual(series[0].labels, { reporter, ...labels }, `labels on ${node}`);
      for (const s of samples.filter((x) => x.name.startsWith('istio_tcp_'))) {
        for (const v of Object.values(s.labels)) {
          assert.ok(![client.status.podIP, server.status.podIP, client.metadata.name, server.metadata.name].includes(v), `no pod IP or pod name in labels: ${v}`);
        }
      }
      // Agent process metrics.
      for (const n of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds']) {
        assert.ok(samples.some((s) => s.name === n), `${n} on ${node}`);
      }
    }

    // Access log: one record per side for this connection, same bytes. The source side is found by
    // the app's own port; the destination side sees the HBONE session's port, so by IP and size.
    const src = `${client.status.podIP}:${done.local}`;
    const ours = {
      'node-1': (l: string) => l.includes(` src.addr=${src} `),
      'node-2': (l: string) => l.includes(` src.addr=${client.status.podIP}:`) && l.includes(` bytes_sent=${done.written} `),
    };
    for (const [node, direction] of [['node-1', 'outbound'], ['node-2', 'inbound']] as const) {
      const recs = accessLines(node).filter(ours[node]);
      assert.equal(recs.length, 1, `one access record on ${node} for ${src}: ${recs.join('\n')}${hint()}`);
      const r = recs[0];
      process.stdout.write(`# ${node} access record: ${r}\n`);
      for (const part of [`src.workload=${client.metadata.name}`, 'src.namespace=metrics', `src.identity=spiffe://${TD}/ns/metrics/sa/front-sa`,
        `dst.addr=${server.status.podIP}:8080`, `dst.workload=${server.metadata.name}`, 'dst.namespace=metrics',
        `dst.identity=spiffe://${TD}/ns/metrics/sa/back-sa`, `direction=${direction}`, `bytes_sent=${done.written}`, `bytes_recv=${done.read} `]) {
        assert.ok(r.includes(part), `${part} in the ${node} record: ${r}`);
      }
      assert.match(r, / duration=\d+ms/);
      assert.doesNotMatch(r, / error=/);
    }
    assert.match(accessLines('node-1').find((l) => l.includes(` src.addr=${src} `))!, / dst\.service=api-svc\.metrics\.svc\.cluster\.local /);
    // The destination side knows the service too (from the workload's target port).
    assert.ok(accessLines('node-2').some((l) => l.includes(`bytes_recv=${done.read} `) && l.includes(' dst.service=api-svc.metrics.svc.cluster.local ')), 'dst.service in node-2\'s record');
  });

  it('a denied attempt: failed counters with DENY on both reporters and one access record with the reason', async () => {
    const applied = ambit(['apply', '-f', '-'], DENY_INTRUDER);
    assert.equal(applied.code, 0, `AuthorizationPolicy refused: ${applied.stderr}`);
    const intruder = pods.find((p) => p.metadata.name === 'intruder')!;
    const edge = { source_workload: 'intruder', destination_workload: 'backend' };
    const deadline = Date.now() + 15_000;
    // Until the policy has reached node-2's agent, the request may still get through.
    let denied: Sample[] = [];
    for (;;) {
      const r = ambit(['exec', key(intruder), '--', 'node', HTTP_GET, `http://${vip}/let-me-in`, '--timeout', '3000']);
      if (r.code !== 0) {
        denied = await until('node-2', (s) => sum(s, 'istio_tcp_connections_failed_total', { ...edge, reporter: 'destination', response_flags: 'DENY' }) >= 1, 'DENY failed count');
        break;
      }
      if (Date.now() > deadline) assert.fail(`the DENY policy never took effect${hint()}`);
      await sleep(250);
    }
    assert.ok(sum(denied, 'istio_tcp_connections_closed_total', { ...edge, reporter: 'destination', response_flags: 'DENY' }) >= 1);
    await until('node-1', (s) => sum(s, 'istio_tcp_connections_failed_total', { ...edge, reporter: 'source', response_flags: 'DENY' }) >= 1, 'source-side DENY (the 401)');
    const recs = accessLines('node-2').filter((l) => l.includes(` src.addr=${intruder.status.podIP}:`) && l.includes('error='));
    assert.ok(recs.length >= 1, `a denied record on node-2${hint()}`);
    process.stdout.write(`# denied record: ${recs.at(-1)}\n`);
    assert.match(recs.at(-1)!, /^\S+ warn access connection complete .*src\.identity=spiffe:\/\/cluster\.local\/ns\/metrics\/sa\/intruder-sa .*direction=inbound .*bytes_sent=0 bytes_recv=0 .*error="ZT_DENIED: [^"]*metrics\/deny-intruder/);
  });
});
