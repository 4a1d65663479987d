/**
 * Where the controller's view of the cluster comes from. A source emits whole snapshots (the set of
 * objects it currently sees, plus what it could not read); the translator turns each snapshot into
 * mesh configuration. The manifest directory is one source; the Kubernetes API is another (later).
 */
import type { KubeObject } from '../../api/k8s.ts';

/** Something a source could not read (a file, a document): reported, never fatal. */
export interface SourceError {
  /** Where: a file path (with `#doc` / `[item]` suffixes), or an API resource. */
  source: string;
  message: string;
}

export interface ClusterSnapshot {
  /** Every object the source sees, in a stable order. */
  objects: KubeObject[];
  /** Problems reading the source; the good objects are still in `objects`. */
  errors: SourceError[];
  /** Increases by one with each snapshot a source emits. */
  revision: number;
}

export interface ConfigSource {
  /** 'kubernetes' for the API source: the controller then adds its cluster parts (kube-wiring.ts). */
  readonly kind?: 'kubernetes' | 'manifests';
  /** Start watching; `onSnapshot` gets the first snapshot before start() resolves, then one per change. */
  start(onSnapshot: (s: ClusterSnapshot) => void): Promise<void>;
  stop(): Promise<void>;
}
