/** kerntap's own metrics, built into every snapshot like any collector's. */
import { readdirSync } from 'node:fs';
import { defineMetric } from './model/metric.js';
import { numberFamily, type RawFamily, type RawNumberPoint } from './model/snapshot.js';

export const selfMetrics = {
  buildInfo: defineMetric({
    name: 'kerntap.build.info', kind: 'gauge', unit: '',
    help: 'Always 1; labels give the kerntap, Node.js and libbpf versions.',
    labels: ['version', 'nodejs_version', 'libbpf_version'],
  }),
  collectorEnabled: defineMetric({
    name: 'kerntap.collector.enabled', kind: 'gauge', unit: '',
    help: '1 when the collector is loaded and attached, 0 when it is off (see the log or --check for why).',
    labels: ['collector'],
  }),
  programRunTime: defineMetric({
    name: 'kerntap.bpf.program.run.time', kind: 'counter', unit: 's',
    help: 'Time the kernel spent running each BPF program (only while BPF stats are enabled).',
    labels: ['collector', 'program'],
  }),
  programRuns: defineMetric({
    name: 'kerntap.bpf.program.runs', kind: 'counter', unit: '{run}',
    help: 'Times each BPF program ran (only while BPF stats are enabled).',
    labels: ['collector', 'program'],
  }),
  programRecursionMisses: defineMetric({
    name: 'kerntap.bpf.program.recursion_misses', kind: 'counter', unit: '{run}',
    help: 'Runs of each BPF program the kernel skipped because another ran on the same CPU (a skipped close leaves a connection counted as active).',
    labels: ['collector', 'program'],
  }),
  mapEntries: defineMetric({
    name: 'kerntap.bpf.map.entries', kind: 'gauge', unit: '{entry}',
    help: 'Entries in each BPF map at the last poll.',
    labels: ['collector', 'map'],
  }),
  mapCapacity: defineMetric({
    name: 'kerntap.bpf.map.capacity', kind: 'gauge', unit: '{entry}',
    help: 'Maximum entries of each BPF map.',
    labels: ['collector', 'map'],
  }),
  mapMemory: defineMetric({
    name: 'kerntap.bpf.map.memory', kind: 'gauge', unit: 'By',
    help: 'Kernel memory each BPF map kerntap holds uses, its globals (.rodata) and counters included: the kernel\'s own count on Linux 6.4+ (fdinfo memlock). Before 6.4 the kernel reports an estimate from capacity; there a hash map allocated as used is counted the same way from its entries.',
    labels: ['collector', 'map'],
  }),
  mapOverflow: defineMetric({
    name: 'kerntap.map.overflow', kind: 'counter', unit: '{event}',
    help: 'Events that found their BPF map full and were added to the map\'s overflow entry instead.',
    labels: ['collector', 'map'],
  }),
  pollDuration: defineMetric({
    name: 'kerntap.poll.duration', kind: 'gauge', unit: 's',
    help: 'How long the last poll of all collectors took.',
    labels: [],
  }),
  polls: defineMetric({
    name: 'kerntap.polls', kind: 'counter', unit: '{poll}',
    help: 'Polls completed (successful or not).',
    labels: [],
  }),
  pollErrors: defineMetric({
    name: 'kerntap.poll.errors', kind: 'counter', unit: '{error}',
    help: 'Polls in which a collector failed to read its maps (its last good values were served).',
    labels: ['collector'],
  }),
  series: defineMetric({
    name: 'kerntap.series', kind: 'gauge', unit: '{series}',
    help: 'Series exported per metric in the last snapshot.',
    labels: ['metric'],
  }),
  seriesOverflow: defineMetric({
    name: 'kerntap.series.overflow', kind: 'gauge', unit: '{series}',
    help: 'Series folded into the "~overflow" series of a metric because it reached limits.max_series_per_metric.',
    labels: ['metric'],
  }),
  processCpu: defineMetric({
    name: 'kerntap.process.cpu.time', kind: 'counter', unit: 's',
    help: 'CPU time used by the kerntap process (user + system).',
    labels: [],
  }),
  processRss: defineMetric({
    name: 'kerntap.process.memory.rss', kind: 'gauge', unit: 'By',
    help: 'Resident memory of the kerntap process.',
    labels: [],
  }),
  processFds: defineMetric({
    name: 'kerntap.process.open_fds', kind: 'gauge', unit: '{fd}',
    help: 'Open file descriptors of the kerntap process.',
    labels: [],
  }),
} as const;

export const allSelfMetricDefs = Object.values(selfMetrics);

/** Per-collector, per-map and per-program numbers the poller gathered. */
export interface SelfState {
  version: string;
  libbpfVersion: string;
  collectors: { name: string; enabled: boolean }[];
  programs: { collector: string; program: string; runTimeNs: bigint; runCount: bigint; recursionMisses: bigint }[];
  statsEnabled: boolean;
  maps: { collector: string; map: string; entries: number | undefined; capacity: number | undefined; memoryBytes: number }[];
  overflow: { collector: string; map: string; count: number }[];
  pollDurationS: number;
  /** Polls completed, counting the one this state is for. */
  polls: number;
  pollErrors: Map<string, number>;
  series: Map<string, number>;
  folded: Map<string, number>;
}

function openFds(): number {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return 0;
  }
}

export function selfFamilies(s: SelfState): RawFamily[] {
  const p = (labels: string[], value: number): RawNumberPoint => ({ labels, value });
  const cpu = process.cpuUsage();
  const fams: RawFamily[] = [
    numberFamily(selfMetrics.buildInfo, [p([s.version, process.versions.node, s.libbpfVersion], 1)]),
    numberFamily(selfMetrics.collectorEnabled, s.collectors.map((c) => p([c.name], c.enabled ? 1 : 0))),
    numberFamily(selfMetrics.mapEntries, s.maps.filter((m) => m.entries !== undefined).map((m) => p([m.collector, m.map], m.entries!))),
    numberFamily(selfMetrics.mapCapacity, s.maps.filter((m) => m.capacity !== undefined).map((m) => p([m.collector, m.map], m.capacity!))),
    numberFamily(selfMetrics.mapMemory, s.maps.map((m) => p([m.collector, m.map], m.memoryBytes))),
    numberFamily(selfMetrics.mapOverflow, s.overflow.map((o) => p([o.collector, o.map], o.count))),
    numberFamily(selfMetrics.programRecursionMisses, s.programs.map((x) => p([x.collector, x.program], Number(x.recursionMisses)))),
    numberFamily(selfMetrics.pollDuration, [p([], s.pollDurationS)]),
    numberFamily(selfMetrics.polls, [p([], s.polls)]),
    numberFamily(selfMetrics.pollErrors, s.collectors.map((c) => p([c.name], s.pollErrors.get(c.name) ?? 0))),
    numberFamily(selfMetrics.series, [...s.series].map(([m, n]) => p([m], n))),
    numberFamily(selfMetrics.seriesOverflow, [...s.folded].map(([m, n]) => p([m], n))),
    numberFamily(selfMetrics.processCpu, [p([], (cpu.user + cpu.system) / 1e6)]),
    numberFamily(selfMetrics.processRss, [p([], process.memoryUsage.rss())]),
    numberFamily(selfMetrics.processFds, [p([], openFds())]),
  ];
  if (s.statsEnabled) {
    fams.push(
      numberFamily(selfMetrics.programRunTime, s.programs.map((x) => p([x.collector, x.program], Number(x.runTimeNs) / 1e9))),
      numberFamily(selfMetrics.programRuns, s.programs.map((x) => p([x.collector, x.program], Number(x.runCount)))),
    );
  }
  return fams;
}
