/**
 * cgroup_cpu: CPU time per cgroup v2 (bpf/cgroup_cpu.bpf.c).
 *
 * Value = the scheduler's run time of slices that ended at context switches
 * + the slice still running on each CPU: the task's run time now
 * (/proc/<tid>/schedstat, which the kernel brings up to date when read)
 * minus its run time at switch-in (the `running` map). The running task's
 * current cgroup is taken from /proc/<tid>/cgroup, so a task moved while
 * running is charged where the kernel's cpu.stat charges it.
 */
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { checkScalar, enumValues, mapLayout, wordIndex, type ObjectBtf } from '../bpf/layout.js';
import type { BpfObjectHandle } from '../bpf/native.js';
import { defineMetric } from '../model/metric.js';
import { numberFamily, type RawNumberPoint } from '../model/snapshot.js';
import type { CollectorContext, CollectorDefinition, CollectorInstance } from './types.js';
import { checkDropsMap, expireCgroupEntries, u64Key } from './common.js';

const OVERFLOW_KEY = 0xffff_ffff_ffff_ffffn;
const BPF_F_NO_PREALLOC = 1;

/** What the collector reads from bpf/cgroup_cpu.bpf.c, checked once against the object's BTF at load. */
export function cgroupCpuLayouts(btf: ObjectBtf, object = 'cgroup_cpu.bpf.o') {
  const site = { collector: 'cgroup_cpu', object };
  checkScalar(btf, site, 'cpu_ns', 'key', 8);
  checkScalar(btf, site, 'cpu_ns', 'value', 8);
  checkDropsMap(btf, site);
  const running = mapLayout(btf, site, 'running', 'value', { pid: 8, exec_ns: 8 });
  return {
    running: wordIndex(running, { ...site, map: 'running' }),
    runningWords: running.size / 8,
    dropSlot: enumValues(btf, site, 'drop_slot', ['DROP_CPU_NS'], { exhaustive: true }),
  };
}
type CgroupCpuLayouts = ReturnType<typeof cgroupCpuLayouts>;

export const cgroupCpuTime = defineMetric({
  name: 'kerntap.cgroup.cpu.time',
  kind: 'counter',
  unit: 's',
  help: 'CPU time consumed by the tasks of each cgroup v2, from sched_switch, including the slices still running.',
  labels: ['cgroup'],
});

const configSchema = z.strictObject({
  enabled: z.boolean().default(true),
  /** Capacity of the per-cgroup map; cgroups beyond it are summed under cgroup="~overflow". */
  max_cgroups: z.number().int().min(16).max(1_048_576).default(16_384),
});
type CgroupCpuConfig = z.output<typeof configSchema>;

class CgroupCpuCollector implements CollectorInstance {
  readonly objects: BpfObjectHandle[];
  readonly dropSlots;

  constructor(
    private readonly obj: BpfObjectHandle,
    private readonly ctx: CollectorContext,
    private readonly layouts: CgroupCpuLayouts,
    /** cpu_ns's max_entries, the overflow key included. */
    private readonly capacity: number,
  ) {
    this.objects = [obj];
    this.dropSlots = [{ slot: layouts.dropSlot.DROP_CPU_NS, map: 'cpu_ns' }];
  }

  async collect(): Promise<ReturnType<typeof numberFamily>[]> {
    // Totals first, then the running slices: a switch in between then
    // under-counts this poll (the poller keeps counters monotonic) instead
    // of counting a slice twice.
    const totals = await this.obj.readMap('cpu_ns');
    const running = await this.obj.readMap('running');

    const nsById = new Map<bigint, bigint>();
    for (let i = 0; i < totals.count; i++) {
      const id = totals.keys.readBigUInt64LE(i * totals.keySize);
      nsById.set(id, totals.values[i]!);
    }
    // One slice per task: a task that moved CPUs between the two slots'
    // reads counts from its latest switch-in only.
    const switchedIn = new Map<bigint, bigint>();
    const { running: W, runningWords } = this.layouts;
    for (let i = 0; i < running.count; i++) {
      const tid = running.values[i * runningWords + W.pid]!;
      const execNs = running.values[i * runningWords + W.exec_ns]!;
      if (tid !== 0n && execNs >= (switchedIn.get(tid) ?? 0n)) switchedIn.set(tid, execNs);
    }
    // A slice is charged where the switch-out will put it: to a cgroup
    // absent from a full map, that is ~overflow. Charging it to the cgroup
    // would give an overflowed cgroup a series holding only its running
    // slices, and count those slices twice (again in ~overflow at switch-out).
    const full = totals.count >= this.capacity;
    for (const [tid, execNs] of switchedIn) {
      const now = this.runTimeOf(tid);
      if (now === undefined || now <= execNs) continue; // exited since: its slice is in the totals at the next poll
      let id = this.currentCgroupOf(tid);
      if (id === undefined) continue;
      if (full && !nsById.has(id)) id = OVERFLOW_KEY;
      nsById.set(id, (nsById.get(id) ?? 0n) + (now - execNs));
    }

    // Resolve every id first: an unknown one triggers the walk that also
    // retires cgroups whose path was taken over by a new one.
    const labels = new Map([...nsById.keys()].map((id) => [id, id === OVERFLOW_KEY ? '~overflow' : this.ctx.cgroups.resolve(id)]));
    const points: RawNumberPoint[] = [];
    for (const [id, ns] of nsById) {
      if (id === OVERFLOW_KEY ? ns === 0n : this.ctx.cgroups.expired(id)) continue;
      points.push({ labels: [labels.get(id)!], value: Number(ns) / 1e9, identity: id.toString() });
    }
    await expireCgroupEntries(this.obj, 'cpu_ns', totals, this.ctx.cgroups,
      (i) => totals.keys.readBigUInt64LE(i * totals.keySize), (id) => id === OVERFLOW_KEY);
    return [numberFamily(cgroupCpuTime, points)];
  }

  /** A task's run time so far (se.sum_exec_runtime, its running slice included), from /proc/<tid>/schedstat. */
  private runTimeOf(tid: bigint): bigint | undefined {
    try {
      return BigInt(readFileSync(`/proc/${tid}/schedstat`, 'utf8').split(' ')[0]!);
    } catch {
      return undefined; // exited, or not in our pid namespace
    }
  }

  /** The cgroup id a task is in now, from /proc/<tid>/cgroup (cgroup v2 line "0::/path"). */
  private currentCgroupOf(tid: bigint): bigint | undefined {
    try {
      const text = readFileSync(`/proc/${tid}/cgroup`, 'utf8');
      const line = text.split('\n').find((l) => l.startsWith('0::'));
      if (!line) return undefined;
      const rel = line.slice(3);
      return statSync(path.join(this.ctx.cgroups.root, rel), { bigint: true }).ino;
    } catch {
      return undefined; // exited, or in another cgroup namespace
    }
  }

  close(): void {
    this.obj.close();
  }
}

export const cgroupCpu: CollectorDefinition<CgroupCpuConfig> = {
  name: 'cgroup_cpu',
  description: 'CPU time per cgroup v2 from sched_switch',
  hooks: [{ kind: 'tp_btf', name: 'sched_switch', since: '5.5' }],
  metrics: [cgroupCpuTime],
  configSchema,
  async start(ctx, config) {
    const ncpu = ctx.native.numPossibleCpus();
    // cpu_ns is allocated as used only where the BPF memory allocator (6.1+)
    // makes that safe under the run-queue lock; before, it is preallocated,
    // which costs max_cgroups x ~64 bytes whatever the CPU count.
    const allocAsUsed = ctx.native.btfHasType('bpf_mem_alloc', 'struct');
    const obj = new ctx.native.BpfObject(ctx.objectPath('cgroup_cpu'), {
      maxEntries: { running: ncpu, cpu_ns: config.max_cgroups + 1 },
      mapFlags: { cpu_ns: allocAsUsed ? BPF_F_NO_PREALLOC : 0 },
    });
    let layouts: CgroupCpuLayouts;
    try {
      layouts = cgroupCpuLayouts(obj.btf(), path.basename(ctx.objectPath('cgroup_cpu')));
      // The overflow key must exist before the map can fill up.
      obj.updateElem('cpu_ns', u64Key(OVERFLOW_KEY), Buffer.alloc(8));
      obj.attach();
    } catch (err) {
      obj.close();
      throw err;
    }
    return new CgroupCpuCollector(obj, ctx, layouts, config.max_cgroups + 1);
  },
};
