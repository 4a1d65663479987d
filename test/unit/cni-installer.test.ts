/**
 * The CNI installer on real temp directories: chaining into typical primary configs (containerd's
 * bridge chain, Calico, Cilium), idempotency, updates, .conf conversion and its restore, byte-exact
 * uninstall, re-chaining after another CNI rewrites its file, errors that name the file, and the
 * `ambit cni-install` / `cni-uninstall` commands.
 */
import { describe, it, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, accessSync, constants } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { CniInstaller } from '../../src/cni/installer/installer.ts';
import type { WatchEvent } from '../../src/cni/installer/installer.ts';
import { ORIGINAL_KEY } from '../../src/cni/installer/chain.ts';
import { isAmbitError } from '../../src/shared/errors.ts';
import { setLogLevel } from '../../src/shared/log.ts';

setLogLevel('off', 'cni-install');

const AMBIT = join(import.meta.dirname, '../../bin/ambit');

// What containerd's default config (and the CNI bridge docs) look like.
const BRIDGE = `{
  "cniVersion": "1.0.0",
  "name": "containerd-net",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "promiscMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "10.88.0.0/16" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    {
      "type": "portmap",
      "capabilities": { "portMappings": true }
    }
  ]
}
`;
// Calico's install-cni output (tab-free, 2-space; order as Calico writes it).
const CALICO = `{
  "name": "k8s-pod-network",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "calico",
      "log_level": "info",
      "log_file_path": "/var/log/calico/cni/cni.log",
      "datastore_type": "kubernetes",
      "nodename": "node-1",
      "mtu": 0,
      "ipam": { "type": "calico-ipam" },
      "policy": { "type": "k8s" },
      "kubernetes": { "kubeconfig": "/etc/cni/net.d/calico-kubeconfig" }
    },
    { "type": "portmap", "snat": true, "capabilities": { "portMappings": true } },
    { "type": "bandwidth", "capabilities": { "bandwidth": true } }
  ]
}`;
// Cilium writes one plugin in a conflist, tab-indented.
const CILIUM = '{\n\t"cniVersion": "0.3.1",\n\t"name": "cilium",\n\t"plugins": [\n\t\t{\n\t\t\t"type": "cilium-cni",\n\t\t\t"enable-debug": false,\n\t\t\t"log-file": "/var/run/cilium/cilium-cni.log"\n\t\t}\n\t]\n}\n';
const BRIDGE_CONF = `{
    "cniVersion": "0.4.0",
    "name": "mynet",
    "type": "bridge",
    "bridge": "cni0",
    "isGateway": true,
    "ipam": {"type": "host-local", "subnet": "10.22.0.0/16"}
}
`;

const SETTINGS = { agentSocket: '/var/run/ambit/ztunnel.sock', logFile: '/var/log/ambit-cni.log' };

let root = '';
let confDir = '';
let binDir = '';
let ambitRoot = '';

function installer(settings: Record<string, unknown> = SETTINGS): CniInstaller {
  return new CniInstaller({ confDir, binDir, plugin: { kind: 'shim', ambitRoot }, settings });
}
const read = (f: string) => readFileSync(join(confDir, f), 'utf8');
const json = (f: string) => JSON.parse(read(f));
const ours = (list: any) => list.plugins.filter((p: any) => p.type === 'ambit-cni');

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'ambt-cniinst-'));
  confDir = join(root, 'net.d');
  binDir = join(root, 'bin');
  ambitRoot = join(import.meta.dirname, '../..');
  mkdirSync(confDir);
  mkdirSync(binDir);
});
afterEach(() => { rmSync(root, { recursive: true, force: true }); });

describe('cni installer: chaining', () => {
  for (const [file, text, first] of [
    ['10-containerd-net.conflist', BRIDGE, 'bridge'],
    ['10-calico.conflist', CALICO, 'calico'],
    ['05-cilium.conflist', CILIUM, 'cilium-cni'],
  ] as const) {
    it(`appends ambit-cni to ${file}, keeps the rest, its mode, and installs the plugin`, () => {
      writeFileSync(join(confDir, file), text);
      chmodSync(join(confDir, file), 0o600);
      writeFileSync(join(confDir, '99-loopback.conf'), '{"cniVersion":"1.0.0","name":"lo","type":"loopback"}');
      const out = installer().installOnce();
      assert.deepEqual(out, { pluginWritten: true, kubeconfigWritten: false, file, action: 'added' });
      const before = JSON.parse(text);
      const after = json(file);
      assert.equal(after.plugins[0].type, first);
      assert.deepEqual(after.plugins.slice(0, -1), before.plugins, 'their plugins untouched, in order');
      assert.deepEqual(after.plugins.at(-1), { type: 'ambit-cni', ...SETTINGS });
      const { plugins: _a, [ORIGINAL_KEY]: marker, ...restAfter } = after;
      const { plugins: _b, ...restBefore } = before;
      assert.deepEqual(restAfter, restBefore, 'top-level keys untouched');
      assert.deepEqual(marker, { file, content: text });
      assert.deepEqual(Object.keys(after), [...Object.keys(before), ORIGINAL_KEY], 'key order kept');
      if (text.includes('\t"')) assert.match(read(file), /^\t"cniVersion"/m, 'indentation kept');
      assert.equal(statSync(join(confDir, file)).mode & 0o777, 0o600);
      assert.equal(read('99-loopback.conf'), '{"cniVersion":"1.0.0","name":"lo","type":"loopback"}', 'non-primary files untouched');
      const plugin = join(binDir, 'ambit-cni');
      accessSync(plugin, constants.X_OK);
      assert.equal(statSync(plugin).mode & 0o777, 0o755);
      assert.match(readFileSync(plugin, 'utf8'), /exec '.*\/bin\/ambit-cni' "\$@"/);
      assert.deepEqual(readdirSync(confDir).sort(), [file, '99-loopback.conf'].sort(), 'no temp files left');
    });
  }

  it('is idempotent: a second run changes nothing and adds no second entry', () => {
    writeFileSync(join(confDir, '10-calico.conflist'), CALICO);
    installer().installOnce();
    const once = read('10-calico.conflist');
    const mtime = statSync(join(confDir, '10-calico.conflist')).mtimeMs;
    const again = installer().installOnce();
    assert.deepEqual(again, { pluginWritten: false, kubeconfigWritten: false, file: '10-calico.conflist', action: 'unchanged' });
    assert.equal(read('10-calico.conflist'), once);
    assert.equal(statSync(join(confDir, '10-calico.conflist')).mtimeMs, mtime, 'not even rewritten');
    assert.equal(ours(json('10-calico.conflist')).length, 1);
  });

  it('updates its entry in place when its settings change, and collapses duplicates', () => {
    writeFileSync(join(confDir, '10-containerd-net.conflist'), BRIDGE);
    installer().installOnce();
    const out = installer({ agentSocket: '/run/other.sock' }).installOnce();
    assert.equal(out.action, 'updated');
    const after = json('10-containerd-net.conflist');
    assert.deepEqual(ours(after), [{ type: 'ambit-cni', agentSocket: '/run/other.sock' }]);
    assert.equal(after[ORIGINAL_KEY].content, BRIDGE, 'the pre-Ambit text stays recorded');
    // Someone duplicated our entry: one remains.
    after.plugins.push({ type: 'ambit-cni', agentSocket: '/x' });
    writeFileSync(join(confDir, '10-containerd-net.conflist'), JSON.stringify(after));
    assert.equal(installer({ agentSocket: '/run/other.sock' }).installOnce().action, 'updated');
    assert.equal(ours(json('10-containerd-net.conflist')).length, 1);
    // Uninstall after updates still gives back the original bytes.
    installer().uninstall();
    assert.equal(read('10-containerd-net.conflist'), BRIDGE);
  });

  it('picks the lexically first config, as the runtime does', () => {
    writeFileSync(join(confDir, '10-calico.conflist'), CALICO);
    writeFileSync(join(confDir, '05-cilium.conflist'), CILIUM);
    writeFileSync(join(confDir, '.05-hidden.tmp'), 'partial');
    mkdirSync(join(confDir, '00-a-directory.conflist'));
    assert.equal(installer().installOnce().file, '05-cilium.conflist');
    assert.equal(read('10-calico.conflist'), CALICO);
  });

  it('converts a .conf into a .conflist and restores it byte for byte on uninstall', () => {
    writeFileSync(join(confDir, '10-bridge.conf'), BRIDGE_CONF);
    chmodSync(join(confDir, '10-bridge.conf'), 0o640);
    const out = installer().installOnce();
    assert.deepEqual(out, { pluginWritten: true, kubeconfigWritten: false, file: '10-bridge.conflist', action: 'converted' });
    assert.deepEqual(readdirSync(confDir), ['10-bridge.conflist'], 'the .conf is gone: it would sort first');
    const list = json('10-bridge.conflist');
    assert.equal(list.cniVersion, '0.4.0');
    assert.equal(list.name, 'mynet');
    assert.deepEqual(list.plugins, [
      { type: 'bridge', bridge: 'cni0', isGateway: true, ipam: { type: 'host-local', subnet: '10.22.0.0/16' } },
      { type: 'ambit-cni', ...SETTINGS },
    ]);
    assert.equal(statSync(join(confDir, '10-bridge.conflist')).mode & 0o777, 0o640, 'mode of the .conf carried over');
    assert.equal(installer().installOnce().action, 'unchanged');

    const un = installer().uninstall();
    assert.deepEqual(un.files, [{ file: '10-bridge.conflist', action: 'restored' }]);
    assert.equal(un.pluginRemoved, true);
    assert.deepEqual(readdirSync(confDir), ['10-bridge.conf']);
    assert.equal(read('10-bridge.conf'), BRIDGE_CONF);
    assert.equal(statSync(join(confDir, '10-bridge.conf')).mode & 0o777, 0o640);
    assert.deepEqual(readdirSync(binDir), []);
  });

  it('uninstall leaves each original byte-identical when Ambit was the only change', () => {
    for (const [f, t] of [['05-cilium.conflist', CILIUM], ['10-calico.conflist', CALICO], ['20-net.conflist', BRIDGE]]) {
      writeFileSync(join(confDir, f), t);
    }
    installer().installOnce();                                      // into cilium, the primary
    rmSync(join(confDir, '05-cilium.conflist'));                  // primary CNI switched
    installer().installOnce();                                      // into calico now
    writeFileSync(join(confDir, '05-cilium.conflist'), CILIUM);
    const un = installer().uninstall();
    assert.deepEqual(un.files, [{ file: '10-calico.conflist', action: 'restored' }]);
    assert.equal(read('05-cilium.conflist'), CILIUM);
    assert.equal(read('10-calico.conflist'), CALICO);
    assert.equal(read('20-net.conflist'), BRIDGE);
    assert.deepEqual(un.errors, []);
    assert.deepEqual(installer().uninstall().files, [], 'a second uninstall finds nothing');
  });

  it('uninstall keeps changes others made since, removing only its entry', () => {
    writeFileSync(join(confDir, '10-calico.conflist'), CALICO);
    installer().installOnce();
    const cur = json('10-calico.conflist');
    cur.plugins.push({ type: 'tuning', sysctl: { 'net.core.somaxconn': '500' } });
    cur.plugins[0].mtu = 1450;
    writeFileSync(join(confDir, '10-calico.conflist'), JSON.stringify(cur, null, 2));
    const un = installer().uninstall();
    assert.deepEqual(un.files, [{ file: '10-calico.conflist', action: 'removed' }]);
    const after = json('10-calico.conflist');
    assert.equal(ours(after).length, 0);
    assert.equal(after[ORIGINAL_KEY], undefined);
    assert.equal(after.plugins[0].mtu, 1450);
    assert.deepEqual(after.plugins.map((p: any) => p.type), ['calico', 'portmap', 'bandwidth', 'tuning']);
  });

  it('a converted .conf that others extended stays a .conflist without our entry', () => {
    writeFileSync(join(confDir, '10-bridge.conf'), BRIDGE_CONF);
    installer().installOnce();
    const cur = json('10-bridge.conflist');
    cur.plugins.push({ type: 'portmap', capabilities: { portMappings: true } });
    writeFileSync(join(confDir, '10-bridge.conflist'), JSON.stringify(cur));
    installer().uninstall();
    assert.deepEqual(readdirSync(confDir), ['10-bridge.conflist']);
    assert.deepEqual(json('10-bridge.conflist').plugins.map((p: any) => p.type), ['bridge', 'portmap']);
  });
});

describe('cni installer: errors name the file', () => {
  const cases: [string, string, RegExp][] = [
    ['10-bad.conflist', '{"cniVersion": "1.0.0", "plugins": [', /10-bad\.conflist: is not valid JSON/],
    ['10-bad.conflist', '{"cniVersion": "1.0.0", "name": "x"}', /10-bad\.conflist: has no "plugins" list/],
    ['10-bad.conflist', '{"cniVersion": "1.0.0", "name": "x", "plugins": []}', /10-bad\.conflist: "plugins" is empty/],
    ['10-bad.conflist', '{"cniVersion": "1.0.0", "name": "x", "plugins": [{"ipam": {}}]}', /plugins\[0\] must be an object with a non-empty "type"/],
    ['10-bad.conf', '{"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "bridge"}]}', /10-bad\.conf: has a "plugins" list but its name does not end in \.conflist/],
    ['10-bad.conf', '{"cniVersion": "0.2.0", "name": "x", "type": "bridge"}', /10-bad\.conf: has cniVersion "0\.2\.0"; ambit-cni supports/],
  ];
  for (const [file, text, re] of cases) {
    it(`${file}: ${re.source.slice(0, 50)}`, () => {
      writeFileSync(join(confDir, file), text);
      assert.throws(() => installer().installOnce(), (err: unknown) => {
        assert.ok(isAmbitError(err, 'CNI_INSTALL_BAD_CONFIG'), String(err));
        assert.match(err.message, re);
        assert.ok(err.message.includes(join(confDir, file)), `names the full path: ${err.message}`);
        return true;
      });
      assert.equal(read(file), text, 'the broken file is left alone');
    });
  }

  it('no config at all: CNI_INSTALL_NO_CONFIG names the directory', () => {
    assert.throws(() => installer().installOnce(), (err: unknown) =>
      isAmbitError(err, 'CNI_INSTALL_NO_CONFIG') && err.message.includes(confDir) && /waiting/.test(err.message));
  });

  it('refuses to overwrite a foreign .conflist when converting a .conf', () => {
    writeFileSync(join(confDir, '10-net.conf'), BRIDGE_CONF);
    writeFileSync(join(confDir, '10-net.conflist'), BRIDGE);
    assert.throws(() => installer().installOnce(), (err: unknown) => isAmbitError(err, 'CNI_INSTALL_CONFLICT') && err.message.includes(join(confDir, '10-net.conflist')));
    assert.equal(read('10-net.conflist'), BRIDGE);
    assert.equal(read('10-net.conf'), BRIDGE_CONF);
  });

  it('a missing ambit root is named', () => {
    writeFileSync(join(confDir, '10-calico.conflist'), CALICO);
    const i = new CniInstaller({ confDir, binDir, plugin: { kind: 'shim', ambitRoot: join(root, 'nowhere') }, settings: SETTINGS });
    assert.throws(() => i.installOnce(), (err: unknown) => isAmbitError(err, 'CNI_INSTALL_NO_PLUGIN') && err.message.includes(join(root, 'nowhere', 'bin', 'ambit-cni')));
  });
});

/** Waits until `pred` holds for an event, or fails naming what was seen. */
function eventually(events: WatchEvent[], pred: (e: WatchEvent) => boolean, what: string, ms = 5000): Promise<WatchEvent> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const tick = () => {
      const hit = events.find(pred);
      if (hit) return resolve(hit);
      if (Date.now() - started > ms) return reject(new Error(`timed out waiting for ${what}; events: ${JSON.stringify(events)}`));
      setTimeout(tick, 20);
    };
    tick();
  });
}

describe('cni installer: watching', () => {
  it('waits for a config, chains it, and re-chains after another CNI rewrites its file', async () => {
    const events: WatchEvent[] = [];
    const watcher = installer().watch({ pollMs: 60_000, onEvent: (e) => events.push(e) });   // inotify only
    try {
      await eventually(events, (e) => e.kind === 'waiting' && e.code === 'CNI_INSTALL_NO_CONFIG', 'the no-config wait');
      // The primary CNI starts and writes its config atomically (as Calico does).
      writeFileSync(join(confDir, '.calico.tmp'), CALICO);
      renameSync(join(confDir, '.calico.tmp'), join(confDir, '10-calico.conflist'));
      await eventually(events, (e) => e.kind === 'installed' && e.outcome.action === 'added', 'the first chain');
      assert.equal(ours(json('10-calico.conflist')).length, 1);

      // It restarts and writes its config again, in place (no rename), without us.
      events.length = 0;
      writeFileSync(join(confDir, '10-calico.conflist'), CALICO);
      await eventually(events, (e) => e.kind === 'installed' && e.outcome.action === 'added', 're-chaining');
      assert.equal(ours(json('10-calico.conflist')).length, 1);
      assert.equal(json('10-calico.conflist')[ORIGINAL_KEY].content, CALICO);

      // A broken write is reported naming the file; the next good one is chained.
      events.length = 0;
      writeFileSync(join(confDir, '10-calico.conflist'), '{"plugins": [');
      const bad = await eventually(events, (e) => e.kind === 'waiting' && e.code === 'CNI_INSTALL_BAD_CONFIG', 'the bad-config report');
      assert.ok(bad.kind === 'waiting' && bad.message.includes(join(confDir, '10-calico.conflist')));
      writeFileSync(join(confDir, '10-calico.conflist'), CALICO);
      await eventually(events, (e) => e.kind === 'installed' && e.outcome.action === 'added', 'chaining after the fix');
    } finally {
      await watcher.stop();
    }
    // Stopped means stopped: a rewrite is no longer chained.
    const n = events.length;
    writeFileSync(join(confDir, '10-calico.conflist'), CALICO);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(events.length, n);
    assert.equal(read('10-calico.conflist'), CALICO);
  });

  it('follows a conf dir that appears later and one that is replaced', async () => {
    rmSync(confDir, { recursive: true });
    const events: WatchEvent[] = [];
    const watcher = installer().watch({ pollMs: 150, onEvent: (e) => events.push(e) });
    try {
      await eventually(events, (e) => e.kind === 'waiting' && e.code === 'CNI_INSTALL_NO_CONFIG', 'the no-config wait');
      mkdirSync(confDir);
      writeFileSync(join(confDir, '05-cilium.conflist'), CILIUM);
      await eventually(events, (e) => e.kind === 'installed' && e.outcome.action === 'added', 'the chain');
      // A new directory in place of the old (a re-provisioned node): chained again.
      events.length = 0;
      renameSync(confDir, `${confDir}.old`);
      mkdirSync(confDir);
      writeFileSync(join(confDir, '05-cilium.conflist'), CILIUM);
      await eventually(events, (e) => e.kind === 'installed' && e.outcome.action === 'added', 'the chain in the new dir');
      assert.equal(ours(json('05-cilium.conflist')).length, 1);
    } finally {
      await watcher.stop();
    }
  });

  it('polling puts back a removed plugin binary', async () => {
    writeFileSync(join(confDir, '10-calico.conflist'), CALICO);
    const events: WatchEvent[] = [];
    const watcher = installer().watch({ pollMs: 100, onEvent: (e) => events.push(e) });
    try {
      await eventually(events, (e) => e.kind === 'installed', 'the install');
      events.length = 0;
      rmSync(join(binDir, 'ambit-cni'));
      await eventually(events, (e) => e.kind === 'installed' && e.outcome.pluginWritten, 'the plugin put back');
      accessSync(join(binDir, 'ambit-cni'), constants.X_OK);
    } finally {
      await watcher.stop();
    }
  });
});

function ambit(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(AMBIT, args, { encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof (err as any).code === 'number' ? (err as any).code : -1) : 0, stdout, stderr });
    });
  });
}

describe('ambit cni-install / cni-uninstall', () => {
  it('installs once, then uninstalls back to the original', async () => {
    writeFileSync(join(confDir, '10-containerd-net.conflist'), BRIDGE);
    const inst = await ambit(['cni-install', '--conf-dir', confDir, '--bin-dir', binDir, '--once', '--agent-socket', '/run/a.sock', '--set', 'extra={"k":1}']);
    assert.equal(inst.code, 0, inst.stderr);
    assert.match(inst.stdout, /chained into .*10-containerd-net\.conflist \(added\)/);
    assert.deepEqual(ours(json('10-containerd-net.conflist')), [{ type: 'ambit-cni', agentSocket: '/run/a.sock', extra: { k: 1 } }]);
    const un = await ambit(['cni-uninstall', '--conf-dir', confDir, '--bin-dir', binDir]);
    assert.equal(un.code, 0, un.stderr);
    assert.equal(read('10-containerd-net.conflist'), BRIDGE);
    assert.deepEqual(readdirSync(binDir), []);
  });

  it('--once gives up after --timeout when there is no config, saying so', async () => {
    const r = await ambit(['cni-install', '--conf-dir', confDir, '--bin-dir', binDir, '--once', '--timeout', '0.3']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no CNI config .* in .*net\.d yet; waiting .* \[CNI_INSTALL_NO_CONFIG\] \(gave up after 0\.3s\)/);
  });

  it('--once fails at once on a malformed config, naming it', async () => {
    writeFileSync(join(confDir, '10-x.conflist'), 'not json');
    const r = await ambit(['cni-install', '--conf-dir', confDir, '--bin-dir', binDir, '--once']);
    assert.equal(r.code, 1);
    assert.ok(r.stderr.includes(`${join(confDir, '10-x.conflist')}: is not valid JSON`), r.stderr);
    assert.match(r.stderr, /\[CNI_INSTALL_BAD_CONFIG\]/);
  });

  it('runs until SIGTERM and uninstalls with --uninstall-on-exit', async () => {
    writeFileSync(join(confDir, '10-calico.conflist'), CALICO);
    const child = execFile(AMBIT, ['cni-install', '--conf-dir', confDir, '--bin-dir', binDir, '--uninstall-on-exit'], { encoding: 'utf8' });
    let stderr = '';
    child.stderr!.on('data', (d) => { stderr += d; });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      const started = Date.now();
      while (!read('10-calico.conflist').includes('ambit-cni')) {
        if (Date.now() - started > 20_000) throw new Error(`not chained: ${stderr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await exited, 0, stderr);
    assert.equal(read('10-calico.conflist'), CALICO);
    assert.deepEqual(readdirSync(binDir), []);
  });
});
