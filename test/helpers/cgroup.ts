/** Real cgroups under the real cgroup2 mount, for integration tests. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, rmdirSync, existsSync } from 'node:fs';
import path from 'node:path';
import { detectCgroup2Root } from '../../src/cgroup/mount.js';
import { waitFor } from './wait.js';

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
    // The shell waits on a child once before it moves itself (a context
    // switch), so the slice in which it moves is microseconds old: kerntap
    // charges a running slice to the cgroup a task is in at its switch-out,
    // while cpu.stat splits it at the move.
    const child = spawn('/bin/sh', ['-c', `/bin/true; echo $$ > '${this.abs}/cgroup.procs' && exec /bin/sh -c '${command.replace(/'/g, `'\\''`)}'`], {
      stdio: ['ignore', stdout, 'inherit'],
    });
    this.children.push(child);
    return child;
  }

  async runToEnd(command: string): Promise<number | null> {
    const child = this.run(command);
    return new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  }

  /** `n` busy loops in the cgroup until it used `cpuSeconds` of CPU (cpu.stat), then killed and gone. */
  async busy(cpuSeconds: number, n = 1): Promise<void> {
    for (let i = 0; i < n; i++) this.run('while :; do :; done');
    try {
      await waitFor(`${this.label} to use ${cpuSeconds} s of CPU`, () => this.usageUsec() >= cpuSeconds * 1e6, 60_000, 20);
    } finally {
      await this.killAll();
    }
  }

  procs(): number[] {
    return readFileSync(path.join(this.abs, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  }

  /** SIGKILLs every process in the cgroup and waits until it is empty. */
  async killAll(): Promise<void> {
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await waitFor(`${this.label} to be empty`, () => {
      const pids = this.procs();
      for (const pid of pids) {
        try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      }
      return pids.length === 0;
    }, 5000);
  }

  /** Removes the cgroup and any child cgroups left in it, killing their processes first. */
  async destroy(): Promise<void> {
    if (!existsSync(this.abs)) return;
    for (const dir of readdirSync(this.abs, { withFileTypes: true })) {
      if (dir.isDirectory()) await new TestCgroup(dir.name, this).destroy();
    }
    await this.killAll();
    // rmdir fails while the last task is still exiting.
    await waitFor(`${this.abs} removed`, () => {
      if (!existsSync(this.abs)) return true;
      try {
        rmdirSync(this.abs);
        return true;
      } catch {
        return false;
      }
    }, 5000, 100);
  }
}
