/**
 * What an instance created on the host, written to the state dir as it is created, so that
 * `ambit local down` can remove all of it even after the supervisor crashed.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';

export interface LedgerData {
  netns: string[];
  links: string[];
  /** host iptables: the chain and the rules that jump to it (as `-A` argument lists). */
  hostChains: { table: string; chain: string; jumps: string[][] }[];
  /** pids of processes in the host netns (controller), with a string their cmdline contains. */
  pids: { pid: number; match: string }[];
}

export class Ledger {
  readonly file: string;
  #data: LedgerData;

  constructor(file: string) {
    this.file = file;
    this.#data = Ledger.read(file);
  }

  static read(file: string): LedgerData {
    try {
      const d = JSON.parse(readFileSync(file, 'utf8')) as Partial<LedgerData>;
      return { netns: d.netns ?? [], links: d.links ?? [], hostChains: d.hostChains ?? [], pids: d.pids ?? [] };
    } catch {
      return { netns: [], links: [], hostChains: [], pids: [] };
    }
  }

  get data(): LedgerData { return this.#data; }

  addNetns(name: string): void { if (!this.#data.netns.includes(name)) { this.#data.netns.push(name); this.#save(); } }
  removeNetns(name: string): void { this.#data.netns = this.#data.netns.filter((n) => n !== name); this.#save(); }
  addLink(name: string): void { if (!this.#data.links.includes(name)) { this.#data.links.push(name); this.#save(); } }
  addHostChain(c: LedgerData['hostChains'][number]): void { this.#data.hostChains.push(c); this.#save(); }
  addPid(pid: number, match: string): void { this.#data.pids.push({ pid, match }); this.#save(); }
  removePid(pid: number): void { this.#data.pids = this.#data.pids.filter((p) => p.pid !== pid); this.#save(); }

  #save(): void {
    const tmp = `${this.file}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.#data, null, 2) + '\n');
    renameSync(tmp, this.file);
  }
}
