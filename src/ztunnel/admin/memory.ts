/**
 * GET /memory: where the agent's memory is (as Envoy's /memory): resident set, V8 heap, memory
 * held outside the heap by JS objects (buffers, sockets), in bytes, so an operator can tell a
 * growing heap from native memory awaiting a collection.
 */
import { getHeapSpaceStatistics, getHeapStatistics } from 'node:v8';

export interface MemoryReport {
  rss: number;
  heapTotal: number;
  heapUsed: number;
  /** Native memory owned by JS objects (includes arrayBuffers). */
  external: number;
  arrayBuffers: number;
  heapSizeLimit: number;
  mallocedMemory: number;
  peakMallocedMemory: number;
  /** V8 heap spaces: reserved (size) and live (used) bytes each. */
  spaces: Record<string, { size: number; used: number }>;
}

export function memoryReport(): MemoryReport {
  const m = process.memoryUsage();
  const h = getHeapStatistics();
  return {
    rss: m.rss, heapTotal: m.heapTotal, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers,
    heapSizeLimit: h.heap_size_limit, mallocedMemory: h.malloced_memory, peakMallocedMemory: h.peak_malloced_memory,
    spaces: Object.fromEntries(getHeapSpaceStatistics().map((s) => [s.space_name, { size: s.space_size, used: s.space_used_size }])),
  };
}
