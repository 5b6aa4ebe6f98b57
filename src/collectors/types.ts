/**
 * What a collector is. One collector = one bpf/<name>.bpf.c + one
 * src/collectors/<name>.ts exporting a CollectorDefinition.
 */
import type { Logger } from 'pino';
import type { z } from 'zod';
import type { BpfObjectHandle, NativeBinding } from '../bpf/native.js';
import type { CgroupResolver } from '../cgroup/resolver.js';
import type { MetricDef } from '../model/metric.js';
import type { RawFamily } from '../model/snapshot.js';

/** A kernel attach point a collector needs; probed before loading. */
export interface Hook {
  kind: 'tp_btf' | 'iter' | 'tracepoint';
  /** Tracepoint name (tp_btf), iterator target (iter) or classic tracepoint category/name, e.g. "sched_switch", "tcp", "syscalls/sys_enter_read". */
  name: string;
  /** First kernel with it, for the error message. */
  since: string;
}

export interface CollectorContext {
  native: NativeBinding;
  cgroups: CgroupResolver;
  log: Logger;
  /** Absolute path of a compiled BPF object, e.g. objectPath('cgroup_cpu'). */
  objectPath(name: string): string;
  pollIntervalMs: number;
}

/** A map whose overflow is counted in the object's kt_drops, by slot. */
export interface DropSlot {
  slot: number;
  map: string;
}

export interface CollectorInstance {
  /** Loaded BPF objects, for the program and map self-metrics. */
  readonly objects: readonly BpfObjectHandle[];
  /** kt_drops slots of objects[0], for kerntap_map_overflow_total. */
  readonly dropSlots: readonly DropSlot[];
  /** How it runs on this kernel where that differs from the usual (fallbacks), for --check and the log. */
  readonly notes?: readonly string[];
  /** Entries of the maps it counts instead of reading (e.g. tcp's sock_table), as of its last collect(). */
  countedEntries?(): ReadonlyMap<string, number>;
  /** Reads the maps and returns this poll's families. nowMs is the poll time. */
  collect(nowMs: number): Promise<RawFamily[]>;
  /** Detaches and frees everything. Idempotent. */
  close(): void;
}

export interface CollectorDefinition<C = any> {
  /** Config key and label value, e.g. "cgroup_cpu". */
  readonly name: string;
  readonly description: string;
  readonly hooks: readonly Hook[];
  readonly metrics: readonly MetricDef[];
  /** Schema of collectors.<name> in the config file; must accept {} and have `enabled`. */
  readonly configSchema: z.ZodType<C & { enabled: boolean }, any>;
  /** Loads and attaches. Throws (with a one-line message) when it can't. */
  start(ctx: CollectorContext, config: C & { enabled: boolean }): Promise<CollectorInstance>;
}
