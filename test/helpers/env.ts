/** Where the tests are and whether the real kernel can be used. */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';

export const ROOT = process.env.KERNTAP_TEST_ROOT ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const BIN = path.join(ROOT, 'bin/kerntap.js');
/** Any non-empty CI value (true, 1, yes, a CI system's own value) means CI, as CI systems set it. */
export function inCi(env: NodeJS.ProcessEnv = process.env): boolean {
  return (env.CI ?? '') !== '';
}
export const IN_CI = inCi();

/** Why BPF integration tests can't run here, or undefined. */
export function bpfUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'not root';
  if (!existsSync('/sys/kernel/btf/vmlinux')) return 'no kernel BTF';
  if (!existsSync(path.join(ROOT, 'build/Release/kerntap_native.node'))) return 'native addon not built (npm run build)';
  if (!existsSync(path.join(ROOT, 'bpf/out/cgroup_cpu.bpf.o'))) return 'BPF objects not built (npm run build)';
  return undefined;
}

/**
 * Skips a test that needs the real kernel when it is unavailable — except in
 * CI (any non-empty CI value), where a skip would hide a broken setup, so it fails instead.
 */
export function requireBpf(t: TestContext): boolean {
  const why = bpfUnavailable();
  if (!why) return true;
  if (IN_CI) throw new Error(`BPF test cannot run in CI: ${why}`);
  t.skip(`BPF unavailable: ${why}`);
  return false;
}

/** Whether a command is on PATH. */
export function hasTool(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;
}

export function requireTool(t: TestContext, tool: string, found: boolean): boolean {
  if (found) return true;
  if (IN_CI) throw new Error(`required tool missing in CI: ${tool}`);
  t.skip(`${tool} not installed`);
  return false;
}

/** BPF program ids a process holds (prog and link fds), from /proc/<pid>/fdinfo. */
export function bpfProgramsOf(pid: number): number[] {
  const ids = new Set<number>();
  for (const fd of readdirSync(`/proc/${pid}/fdinfo`)) {
    try {
      const m = /^prog_id:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
      if (m) ids.add(Number(m[1]));
    } catch {
      // closed meanwhile
    }
  }
  return [...ids];
}

/** Ids of every BPF program loaded in the kernel now. */
export function loadedBpfPrograms(): Set<number> {
  const out = execFileSync('bpftool', ['prog', 'show', '-j'], { encoding: 'utf8' });
  return new Set((JSON.parse(out) as { id: number }[]).map((p) => p.id));
}

/** The number of possible CPUs ("0-191" or "0" in sysfs): what per-CPU maps are sized by. */
export function possibleCpus(): number {
  const text = readFileSync('/sys/devices/system/cpu/possible', 'utf8').trim();
  return text.split(',').reduce((n, r) => {
    const [a, b] = r.split('-').map(Number);
    return n + (b === undefined ? 1 : b - a! + 1);
  }, 0);
}

export interface BpftoolMap { id: number; type: string; name: string; flags: number; bytes_key: number; bytes_value: number; max_entries: number; bytes_memlock: number }

/** The BPF maps a process holds, as `bpftool map show` describes them. */
export function mapsHeldBy(pid: number): BpftoolMap[] {
  const ours = new Set(mapMemlock(pid).byId.keys());
  return (JSON.parse(execFileSync('bpftool', ['-j', 'map', 'show'], { encoding: 'utf8' })) as BpftoolMap[]).filter((m) => ours.has(m.id));
}

/** Memlock of the BPF maps a process holds, each map once, from /proc/<pid>/fdinfo. */
export function mapMemlock(pid: number): { bytes: number; maps: number; byId: Map<number, number> } {
  const seen = new Map<number, number>();
  for (const fd of readdirSync(`/proc/${pid}/fdinfo`)) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    } catch {
      continue; // closed meanwhile
    }
    const id = /^map_id:\s+(\d+)$/m.exec(text);
    const memlock = /^memlock:\s+(\d+)$/m.exec(text);
    if (id && memlock) seen.set(Number(id[1]), Number(memlock[1]));
  }
  return { bytes: [...seen.values()].reduce((a, b) => a + b, 0), maps: seen.size, byId: seen };
}
