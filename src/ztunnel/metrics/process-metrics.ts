/**
 * The process metrics Prometheus users look for on any target (process_*: CPU, memory, file
 * descriptors, start time) and the Node.js ones dashboards use (heap, external memory, event-loop
 * lag, version). Everything is read at scrape time: no timers run between scrapes, so an idle agent
 * stays idle.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { Counter, Gauge, type Registry } from './prometheus.ts';

/** A field of /proc/self/status in bytes (the kernel writes kB), or undefined off Linux. */
function procStatusBytes(field: string): number | undefined {
  let text: string;
  try {
    text = readFileSync('/proc/self/status', 'latin1');
  } catch {
    return undefined;
  }
  const m = new RegExp(`^${field}:\\s*(\\d+) kB$`, 'm').exec(text);
  return m ? Number(m[1]) * 1024 : undefined;
}

/** The soft limit on open files, from /proc/self/limits. */
function maxFds(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'latin1'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

function openFds(): number | undefined {
  try {
    return readdirSync('/proc/self/fd').length - 1; // less the descriptor readdir itself holds open
  } catch {
    return undefined;
  }
}

export function registerProcessMetrics(registry: Registry): void {
  // The kernel's CPU totals are monotonic: each scrape adds what is new since the last one.
  const cpu = (read: (u: NodeJS.CpuUsage) => number) => {
    let last = 0;
    return (c: Counter): void => {
      const now = read(process.cpuUsage());
      if (now <= last) return;
      c.inc((now - last) / 1e6);
      last = now;
    };
  };
  new Counter({ name: 'process_cpu_user_seconds_total', help: 'CPU time the process spent in user mode, in seconds.', registry, collect: cpu((u) => u.user) });
  new Counter({ name: 'process_cpu_system_seconds_total', help: 'CPU time the process spent in the kernel, in seconds.', registry, collect: cpu((u) => u.system) });
  new Counter({ name: 'process_cpu_seconds_total', help: 'CPU time the process spent, user and kernel, in seconds.', registry, collect: cpu((u) => u.user + u.system) });
  new Gauge({ name: 'process_start_time_seconds', help: 'When the process started, in seconds since the Unix epoch.', registry })
    .set(Math.round(Date.now() / 1000 - process.uptime()));

  new Gauge({ name: 'process_resident_memory_bytes', help: 'Resident set size of the process, in bytes.', registry, collect: (g) => g.set(process.memoryUsage.rss()) });
  const fromProc = (name: string, help: string, read: () => number | undefined): void => {
    if (read() === undefined) return; // not Linux: leave the metric out rather than report 0
    new Gauge({ name, help, registry, collect: (g) => { const v = read(); if (v !== undefined) g.set(v); } });
  };
  fromProc('process_virtual_memory_bytes', 'Virtual memory size of the process, in bytes.', () => procStatusBytes('VmSize'));
  fromProc('process_heap_bytes', 'Size of the process data segment (VmData), in bytes.', () => procStatusBytes('VmData'));
  fromProc('process_open_fds', 'File descriptors the process has open.', openFds);
  fromProc('process_max_fds', 'The most file descriptors the process may open (soft limit).', maxFds);

  new Gauge({
    name: 'nodejs_eventloop_lag_seconds', help: 'How long a callback queued at scrape time waited for the event loop, in seconds.', registry,
    collect: (g) => new Promise<void>((resolve) => {
      const from = performance.now();
      setImmediate(() => {
        g.set((performance.now() - from) / 1000);
        resolve();
      });
    }),
  });
  new Gauge({ name: 'nodejs_heap_size_total_bytes', help: 'V8 heap size, in bytes.', registry, collect: (g) => g.set(process.memoryUsage().heapTotal) });
  new Gauge({ name: 'nodejs_heap_size_used_bytes', help: 'V8 heap in use, in bytes.', registry, collect: (g) => g.set(process.memoryUsage().heapUsed) });
  new Gauge({ name: 'nodejs_external_memory_bytes', help: 'Memory of C++ objects bound to JavaScript objects, in bytes.', registry, collect: (g) => g.set(process.memoryUsage().external) });
  const [major, minor, patch] = process.versions.node.split('.');
  const version = new Gauge({ name: 'nodejs_version_info', help: 'The Node.js version, in labels.', labelNames: ['version', 'major', 'minor', 'patch'], registry });
  version.set({ version: process.version, major, minor, patch }, 1);
}
