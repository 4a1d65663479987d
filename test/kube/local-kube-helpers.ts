/** Shared by the `ambit local up --kubernetes` tests: one instance, and kubectl against its API server. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { ambitLocal, newInstance } from '../netns/local-helpers.ts';

export interface Run { code: number | null; stdout: string; stderr: string }

export class LocalKube {
  readonly instance = newInstance();
  readonly state = `/run/ambit/${this.instance}`;
  kubeconfig = '';
  kubectlBin = '';

  ambit(args: string[], input?: string): Run {
    return ambitLocal(this.instance, args, input);
  }

  hint(): string {
    return `\n(instance ${this.instance}; logs in ${this.state}/logs and ${this.state}/kube/logs)`;
  }

  /** After `up --kubernetes`: the kubeconfig and kubectl that `ambit local kubeconfig` / `env` name. */
  locate(): void {
    this.kubeconfig = this.ambit(['kubeconfig']).stdout.trim();
    this.kubectlBin = `${/PATH='([^']+)'/.exec(this.ambit(['env']).stdout)![1]}/kubectl`;
  }

  kubectl(args: string[], input?: string): Run {
    const r = spawnSync(this.kubectlBin, args, { encoding: 'utf8', input, timeout: 60_000, env: { ...process.env, KUBECONFIG: this.kubeconfig } });
    return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  }

  kubectlOk(args: string[], input?: string): string {
    const r = this.kubectl(args, input);
    assert.equal(r.code, 0, `kubectl ${args.join(' ')}: ${r.stderr}${this.hint()}`);
    return r.stdout;
  }
}
