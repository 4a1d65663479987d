/**
 * Runtime enrollment: the CNI plugin hands every pod of the node to the agent (enrolled or not);
 * this reconciler compares each local pod with the controller's workload record and asks the agent
 * to enroll (listeners, then in-pod rules) or release (rules, then listeners) the ones whose
 * namespace or pod label changed. The controller's record is the truth (protocol HBONE = enrolled):
 * it applies the same label rules as the CNI plugin, for Kubernetes and the local mesh alike.
 *
 * A pod without a workload record (not pushed yet, controller away) keeps what it has: the CNI
 * plugin's decision at start-up. Failures are retried with backoff; one pass at a time.
 */
import type { Workload } from '../api/mesh.ts';
import type { StateView } from './state/store.ts';
import { errorMessage } from '../shared/errors.ts';
import { logger } from '../shared/log.ts';

const log = logger('agent.enrollment');

export interface LocalPodView { uid: string; namespace: string; name: string; enrolled: boolean }

/** Whether a local pod should be in the mesh now; `undefined` = keep as it is (no record). */
export function wantEnrolled(workload: Workload | undefined): boolean | undefined {
  if (!workload) return undefined;
  return workload.protocol === 'HBONE';
}

export interface EnrollmentReconcilerOptions {
  state: StateView;
  pods(): LocalPodView[];
  /** Both are idempotent and leave the pod as it was when they throw. */
  enroll(uid: string): Promise<void>;
  release(uid: string): Promise<void>;
  retryMinMs?: number;
  retryMaxMs?: number;
}

export class EnrollmentReconciler {
  readonly #o: EnrollmentReconcilerOptions;
  #running: Promise<void> | undefined;
  #again = false;
  #stopped = true;
  #unsubscribe: (() => void) | undefined;
  #retry: NodeJS.Timeout | undefined;
  #retryMs: number;

  constructor(o: EnrollmentReconcilerOptions) {
    this.#o = o;
    this.#retryMs = o.retryMinMs ?? 500;
  }

  start(): void {
    this.#stopped = false;
    this.#unsubscribe = this.#o.state.onChange(() => this.trigger());
    this.trigger();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#unsubscribe?.();
    clearTimeout(this.#retry);
    await this.#running;
  }

  /** Reconcile soon (state changed, a pod was added). Coalesces with a pass in progress. */
  trigger(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = this.#loop().finally(() => { this.#running = undefined; });
  }

  /** Resolves when no pass is running (tests). */
  async idle(): Promise<void> {
    while (this.#running) await this.#running;
  }

  async #loop(): Promise<void> {
    do {
      this.#again = false;
      const failed = await this.#pass();
      clearTimeout(this.#retry);
      if (failed > 0 && !this.#stopped) {
        this.#retry = setTimeout(() => this.trigger(), this.#retryMs);
        this.#retryMs = Math.min(this.#retryMs * 2, this.#o.retryMaxMs ?? 30_000);
      } else if (failed === 0) {
        this.#retryMs = this.#o.retryMinMs ?? 500;
      }
    } while (this.#again && !this.#stopped);
  }

  /** One pass: every change in parallel (pods are independent); returns how many failed. */
  async #pass(): Promise<number> {
    const work: Promise<boolean>[] = [];
    for (const pod of this.#o.pods()) {
      const want = wantEnrolled(this.#o.state.workloadByUid(pod.uid));
      if (want === undefined || want === pod.enrolled) continue;
      const key = `${pod.namespace}/${pod.name}`;
      work.push((want ? this.#o.enroll(pod.uid) : this.#o.release(pod.uid)).then(
        () => true,
        (err: unknown) => {
          log.error(want ? 'cannot enroll pod; will retry' : 'cannot release pod; will retry', { pod: key, uid: pod.uid, error: errorMessage(err) });
          return false;
        }));
    }
    return (await Promise.all(work)).filter((ok) => !ok).length;
  }
}
