/** Real cgroups under the real cgroup2 mount, for integration tests. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, rmdirSync, existsSync } from 'node:fs';
import path from 'node:path';
import { detectCgroup2Root } from '../../src/cgroup/mount.js';

export class TestCgroup {
  readonly abs: string;
  /** The label kerntap gives it: path relative to the cgroup2 root. */
  readonly label: string;
  private readonly children: ChildProcess[] = [];

  constructor(name: string, parent?: TestCgroup) {
    const root = detectCgroup2Root();
    const rel = parent ? `${parent.label}/${name}` : `/${name}`;
    this.abs = path.join(root, rel);
    this.label = rel;
    mkdirSync(this.abs, { recursive: true });
  }

  static unique(prefix: string): TestCgroup {
    return new TestCgroup(`${prefix}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`);
  }

  usageUsec(): number {
    const m = /^usage_usec (\d+)$/m.exec(readFileSync(path.join(this.abs, 'cpu.stat'), 'utf8'));
    if (!m) throw new Error(`no usage_usec in ${this.abs}/cpu.stat`);
    return Number(m[1]);
  }

  /** Runs a shell command inside this cgroup (the shell moves itself in, then execs). */
  run(command: string, stdout: 'ignore' | 'pipe' = 'ignore'): ChildProcess {
    const child = spawn('/bin/sh', ['-c', `echo $$ > '${this.abs}/cgroup.procs' && exec /bin/sh -c '${command.replace(/'/g, `'\\''`)}'`], {
      stdio: ['ignore', stdout, 'inherit'],
    });
    this.children.push(child);
    return child;
  }

  async runToEnd(command: string): Promise<number | null> {
    const child = this.run(command);
    return new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  }

  procs(): number[] {
    return readFileSync(path.join(this.abs, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  }

  /** SIGKILLs every process in the cgroup and waits until it is empty. */
  async killAll(): Promise<void> {
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (let i = 0; i < 50; i++) {
      const pids = this.procs();
      if (pids.length === 0) return;
      for (const pid of pids) {
        try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async destroy(): Promise<void> {
    if (existsSync(this.abs)) await this.killAll();
    for (let i = 0; i < 50 && existsSync(this.abs); i++) {
      try {
        rmdirSync(this.abs);
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
}
