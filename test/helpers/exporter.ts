/** Runs the real exporter (bin/kerntap.js) as a child process. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BIN, bpfProgramsOf, loadedBpfPrograms } from './env.js';
import { scrapable } from './wait.js';

export interface Exporter {
  url: string;
  pid: number;
  child: ChildProcess;
  stderr: () => string;
  scrape(path?: string, headers?: Record<string, string>): Promise<string>;
  /** Sends the signal and resolves with the exit code once the process is gone. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export function writeConfig(yaml: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'kerntap-test-'));
  const file = path.join(dir, 'kerntap.yml');
  writeFileSync(file, yaml);
  return file;
}

/**
 * Starts bin/kerntap.js (500 ms polls unless `args` say otherwise). With
 * `cgroup` (an absolute cgroup2 directory) it runs there from its first
 * instruction: a shell moves itself in, then execs node, so every page and
 * BPF map it allocates is charged to that cgroup. `wrap`: a command kerntap
 * runs under, e.g. setpriv with a capability set. `bin`: another checkout's
 * bin/kerntap.js (bench A/B).
 */
export async function startExporter(args: string[] = [], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cgroup?: string; wrap?: string[]; bin?: string } = {}): Promise<Exporter> {
  const kerntap = [...(opts.wrap ?? []), process.execPath, opts.bin ?? BIN, '--web.listen-address', '127.0.0.1:0', '--poll.interval', '500ms', ...args];
  const command = opts.cgroup ? ['/bin/sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', opts.cgroup, ...kerntap] : kerntap;
  const child = spawn(command[0]!, command.slice(1), {
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`exporter did not start in time:\n${err}`)), opts.timeoutMs ?? 30_000);
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      for (const line of err.split('\n')) {
        if (!line.includes('kerntap listening')) continue;
        try {
          const rec = JSON.parse(line) as { address: string };
          clearTimeout(timer);
          resolve(rec.address);
        } catch {
          // partial line
        }
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`exporter exited with ${code} before listening:\n${err}${out}`));
    });
  });
  return {
    url,
    pid: child.pid!,
    child,
    stderr: () => err,
    scrape: scrapable(url).scrape,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      const timeout = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(timeout);
      return code;
    },
  };
}

export interface Detach {
  code: number | null;
  /** The programs it held while running (from its fdinfo). */
  programs: number[];
  exitMs: number;
  /** Its programs still loaded `withinMs` after the signal. */
  left: number[];
  goneMs: number;
}

/**
 * Signals the exporter and measures the detach: when it exited, and when
 * its programs were gone from the kernel, which frees a program after an
 * RCU grace period once every fd is closed (polled up to `withinMs`).
 */
export async function stopAndWatchUnload(exporter: Exporter, signal: NodeJS.Signals = 'SIGTERM', withinMs = 1000): Promise<Detach> {
  const programs = bpfProgramsOf(exporter.pid);
  const t0 = Date.now();
  const code = await exporter.stop(signal);
  const exitMs = Date.now() - t0;
  let left = programs;
  while (left.length > 0 && Date.now() - t0 < withinMs) {
    await sleep(20);
    const still = loadedBpfPrograms();
    left = programs.filter((id) => still.has(id));
  }
  return { code, programs, exitMs, left, goneMs: Date.now() - t0 };
}

/** Pacing for the benchmarks (bench/). Tests wait on conditions instead (wait.ts). */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
