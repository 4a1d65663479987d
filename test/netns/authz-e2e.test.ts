/**
 * Istio L4 security end to end on a two-node local mesh: AuthorizationPolicy and PeerAuthentication
 * applied as manifests with `ambit local apply`, enforced by node-2's agent for the server pod.
 * Clients: bar/client and baz/other (meshed, node-1), plain/legacy (not in the mesh, node-1).
 * Debug a failure: logs in /run/ambit/<instance>/logs (the test prints the instance).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AMBIT, ambitLocal, HTTP_GET, newInstance, sweepLeftovers } from './local-helpers.ts';

const INSTANCE = newInstance();
const STATE = `/run/ambit/${INSTANCE}`;
const hint = () => `\n(instance ${INSTANCE}; logs in ${STATE}/logs)`;
const ambit = (args: string[], input?: string) => ambitLocal(INSTANCE, args, input);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const MANIFESTS = `
apiVersion: v1
kind: Namespace
metadata: { name: istio-system }
---
apiVersion: v1
kind: Namespace
metadata: { name: authz, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Pod
metadata: { name: server, namespace: authz, labels: { app: server } }
spec:
  nodeName: node-2
  serviceAccountName: server-sa
  containers:
  - { name: a, image: ambit/echo, ports: [{ containerPort: 8080 }] }
  - { name: b, image: ambit/echo, ports: [{ containerPort: 8081 }] }
---
apiVersion: v1
kind: Namespace
metadata: { name: bar, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: bar }
spec: { nodeName: node-1, serviceAccountName: client-sa, containers: [{ name: sleep, image: ambit/sleep }] }
---
apiVersion: v1
kind: Namespace
metadata: { name: baz, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Pod
metadata: { name: other, namespace: baz }
spec: { nodeName: node-1, serviceAccountName: other-sa, containers: [{ name: sleep, image: ambit/sleep }] }
---
apiVersion: v1
kind: Namespace
metadata: { name: plain }
---
apiVersion: v1
kind: Pod
metadata: { name: legacy, namespace: plain }
spec: { nodeName: node-1, containers: [{ name: sleep, image: ambit/sleep }] }
`;

const policy = (name: string, spec: string, kind = 'AuthorizationPolicy', namespace = 'authz') =>
  `apiVersion: security.istio.io/v1\nkind: ${kind}\nmetadata: { name: ${name}, namespace: ${namespace} }\nspec: ${spec}\n`;

/**
 * Holds one HTTP/1.1 keep-alive connection, a request every 200 ms; prints `open` after the first
 * answer and `closed <epoch ms> <error>` when the connection ends.
 */
const KEEPALIVE_CLIENT = `const net = require('node:net'); const s = net.connect(Number(process.argv[2]), process.argv[1]);
let n = 0, err = '', waiting = false;
const send = () => { waiting = true; s.write('GET /ka-' + (n++) + ' HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n'); };
s.on('connect', send);
s.on('data', () => { if (!waiting) return; waiting = false; if (n === 1) console.log('open'); setTimeout(send, 200); });
s.on('error', (e) => { err = e.code || e.message; });
s.on('close', () => { console.log('closed ' + Date.now() + ' ' + (err || 'eof') + ' after ' + n); process.exit(0); });`;

let serverIp = '';

/** One GET from a pod; true when it got an answer. */
function tryGet(from: string, port: number): boolean {
  const r = ambit(['exec', from, '--', 'node', HTTP_GET, `http://${serverIp}:${port}/`, '--timeout', '3000']);
  return r.code === 0;
}

/** Waits until GETs from `from` give `want` (config reaching the agent); returns the first try's result too. */
async function expect(from: string, port: number, want: boolean, patienceMs = 10_000): Promise<{ firstTry: boolean }> {
  const deadline = Date.now() + patienceMs;
  let first: boolean | undefined;
  for (;;) {
    const got = tryGet(from, port);
    first ??= got;
    if (got === want) return { firstTry: first === want };
    if (Date.now() > deadline) assert.fail(`GET ${serverIp}:${port} from ${from}: wanted ${want ? 'an answer' : 'a refusal'}${hint()}`);
    await sleep(200);
  }
}

function apply(yaml: string): void {
  const r = ambit(['apply', '-f', '-'], yaml);
  assert.equal(r.code, 0, r.stdout + r.stderr + hint());
}
function remove(yaml: string): void {
  const r = ambit(['delete', '-f', '-'], yaml);
  assert.equal(r.code, 0, r.stdout + r.stderr + hint());
}
const agentLog = () => readFileSync(join(STATE, 'logs', 'agent-node-2.log'), 'utf8');

/** The keep-alive client running in a pod (its own process: `exec` blocks until it exits). */
function holdConnection(from: string, port: number): { child: ChildProcess; opened: Promise<void>; closed: Promise<{ at: number; line: string }> } {
  const child = spawn(AMBIT, ['local', 'exec', from, '--', 'node', '-e', KEEPALIVE_CLIENT, serverIp, String(port)], {
    env: { ...process.env, AMBIT_LOCAL_INSTANCE: INSTANCE }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  let onOpen: () => void = () => {};
  let onClose: (v: { at: number; line: string }) => void = () => {};
  const opened = new Promise<void>((r) => (onOpen = r));
  const closed = new Promise<{ at: number; line: string }>((r) => (onClose = r));
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.includes('open\n')) onOpen();
    const m = /closed (\d+) .*\n/.exec(out);
    if (m) onClose({ at: Number(m[1]), line: m[0].trim() });
  });
  return { child, opened, closed };
}

describe(`L4 security end to end (instance ${INSTANCE})`, { timeout: 300_000 }, () => {
  before(async () => {
    sweepLeftovers();
    const up = ambit(['up', '--nodes', '2']);
    assert.equal(up.code, 0, up.stdout + up.stderr + hint());
    apply(MANIFESTS);
    const pods = (JSON.parse(ambit(['get', 'pods', '-n', 'authz', '-o', 'json']).stdout) as { items: { status: { podIP: string } }[] }).items;
    serverIp = pods[0].status.podIP;
    await expect('bar/client', 8080, true, 20_000);
  });
  after(() => { if (process.env.AMBIT_TEST_KEEP !== '1') ambit(['down']); });

  it('no policy: meshed and plaintext clients get through (PERMISSIVE default)', async () => {
    await expect('baz/other', 8080, true);
    await expect('plain/legacy', 8080, true);
  });

  it('allow-nothing (spec: {}) blocks everyone, at once; the access log names the policy', async () => {
    const p = policy('allow-nothing', '{}');
    apply(p);
    const first = await expect('bar/client', 8080, false);
    assert.ok(first.firstTry, 'the first connection after apply was already refused');
    await expect('baz/other', 8080, false, 1000);
    await expect('plain/legacy', 8081, false, 1000);
    assert.match(agentLog(), /ZT_DENIED: no ALLOW policy matched \(policy authz\/allow-nothing applies\)/, hint());
    remove(p);
    await expect('bar/client', 8080, true);
  });

  it('deny from a namespace: bar refused, baz admitted', async () => {
    const p = policy('deny-bar', '{ action: DENY, rules: [{ from: [{ source: { namespaces: [bar] } }] }] }');
    apply(p);
    await expect('bar/client', 8080, false);
    await expect('baz/other', 8080, true, 1000);
    assert.match(agentLog(), /ZT_DENIED: denied by DENY policy authz\/deny-bar/, hint());
    remove(p);
  });

  it('allow only one principal: baz/other-sa admitted, bar/client and the plaintext client refused', async () => {
    const p = policy('only-other', '{ rules: [{ from: [{ source: { principals: ["cluster.local/ns/baz/sa/other-sa"] } }] }] }');
    apply(p);
    await expect('bar/client', 8080, false);
    await expect('baz/other', 8080, true, 1000);
    await expect('plain/legacy', 8080, false, 1000);
    remove(p);
  });

  it('mesh-wide DENY in the root namespace on one port (to.operation.ports)', async () => {
    const p = policy('deny-8081', '{ action: DENY, rules: [{ to: [{ operation: { ports: ["8081"] } }] }] }', 'AuthorizationPolicy', 'istio-system');
    apply(p);
    await expect('baz/other', 8081, false);
    await expect('baz/other', 8080, true, 1000);
    remove(p);
  });

  it('STRICT refuses a non-mesh client; PERMISSIVE admits it; meshed clients unaffected', async () => {
    const strict = policy('mtls', '{ mtls: { mode: STRICT } }', 'PeerAuthentication');
    apply(strict);
    await expect('plain/legacy', 8080, false);
    await expect('bar/client', 8080, true, 1000);
    assert.match(agentLog(), /PeerAuthentication authz\/mtls requires mTLS \(STRICT\) for port 8080/, hint());
    apply(policy('mtls', '{ mtls: { mode: PERMISSIVE } }', 'PeerAuthentication'));
    await expect('plain/legacy', 8080, true);
    remove(strict);
  });

  it('port-level override: workload STRICT with 8081 PERMISSIVE', async () => {
    const p = policy('server-mtls', '{ selector: { matchLabels: { app: server } }, mtls: { mode: STRICT }, portLevelMtls: { "8081": { mode: PERMISSIVE } } }', 'PeerAuthentication');
    apply(p);
    await expect('plain/legacy', 8080, false);
    await expect('plain/legacy', 8081, true, 1000);
    remove(p);
    await expect('plain/legacy', 8080, true);
  });

  it('a policy change closes an already-open connection it now denies within a second; others stay open', async () => {
    const denied = holdConnection('bar/client', 8080);
    const kept = holdConnection('baz/other', 8080);
    const plain = holdConnection('plain/legacy', 8080);
    try {
      await Promise.all([denied.opened, kept.opened, plain.opened]);
      await sleep(300);
      const p = policy('deny-bar', '{ action: DENY, rules: [{ from: [{ source: { namespaces: [bar] } }] }] }');
      apply(p);
      const applied = Date.now();
      const c = await Promise.race([denied.closed, sleep(3000).then(() => undefined)]);
      assert.ok(c, `the bar connection is still open 3 s after apply${hint()}`);
      const took = c.at - applied;
      process.stdout.write(`# open connection closed ${took} ms after apply returned (${c.line})\n`);
      assert.ok(took < 1000, `closed ${took} ms after apply`);
      assert.match(agentLog(), /ZT_POLICY_CHANGED: closed after a policy change: denied by DENY policy authz\/deny-bar/, hint());
      // STRICT now: the plaintext one goes too, the mTLS one from baz stays.
      const strict = policy('mtls', '{ mtls: { mode: STRICT } }', 'PeerAuthentication');
      apply(strict);
      const applied2 = Date.now();
      const pc = await Promise.race([plain.closed, sleep(3000).then(() => undefined)]);
      assert.ok(pc, `the plaintext connection is still open 3 s after STRICT${hint()}`);
      process.stdout.write(`# plaintext connection closed ${pc.at - applied2} ms after STRICT was applied (${pc.line})\n`);
      assert.ok(pc.at - applied2 < 1000, `plaintext closed ${pc.at - applied2} ms after apply`);
      const stillOpen = await Promise.race([kept.closed.then(() => false), sleep(1000).then(() => true)]);
      assert.ok(stillOpen, 'the baz connection was not closed');
      remove(p);
      remove(strict);
    } finally {
      for (const h of [denied, kept, plain]) h.child.kill();
    }
  });
});
