/**
 * The poller reads every running collector each interval into one Snapshot.
 * Scrapes and OTLP exports read the latest snapshot; they never touch the
 * kernel themselves, so any number of them see the same consistent data.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { CollectorInstance } from './collectors/types.js';
import { readDropCounts } from './collectors/common.js';
import { prometheusName } from './model/metric.js';
import type { Family, RawFamily, Snapshot } from './model/snapshot.js';
import { SeriesTracker } from './series.js';
import { selfFamilies, type SelfState } from './selfmetrics.js';
import type { MapBatch } from './bpf/native.js';
import { mapMemoryBytes, type MapMemoryEnv } from './bpf/map_memory.js';
import type { CgroupLabeler } from './cgroup/labeler.js';

export interface RunningCollector {
  name: string;
  instance: CollectorInstance;
}

export interface PollerOptions {
  intervalMs: number;
  maxSeriesPerMetric: number;
  maxLabelLength: number;
  degradedAfterFailures: number;
  version: string;
  libbpfVersion: string;
  statsEnabled: () => boolean;
  /** How the kernel reports map memory (see bpf/map_memory.ts); without it, fdinfo's figure as is. */
  mapMemory?: MapMemoryEnv;
  log: Logger;
  /** All collectors known, with whether they run (for kerntap_collector_enabled). */
  collectorStates: { name: string; enabled: boolean }[];
  /** Called before each poll (e.g. to refresh the cgroup tree). */
  beforePoll?: (nowMs: number) => void;
  /** Adds identity labels to per-cgroup metrics (and folds cgroups, if configured). */
  labeler?: CgroupLabeler;
}

interface PerCollector {
  running: RunningCollector;
  lastGood: RawFamily[];
  errors: number;
  lastErrorLogMs: number;
  mapEntries: Map<string, number>;
}

export class Poller extends EventEmitter {
  private readonly tracker: SeriesTracker;
  private readonly per: PerCollector[];
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<Snapshot> | undefined;
  private seq = 0;
  private stopped = false;
  private lastFailureLogMs = -Infinity;
  private readonly sources: (() => RawFamily[])[] = [];
  latest: Snapshot;
  consecutiveFailures = 0;
  lastError: string | undefined;

  constructor(collectors: RunningCollector[], private readonly opts: PollerOptions) {
    super();
    const startMs = Date.now();
    this.tracker = new SeriesTracker({
      maxSeriesPerMetric: opts.maxSeriesPerMetric,
      maxLabelLength: opts.maxLabelLength,
      startMs,
    });
    this.per = collectors.map((running) => {
      const mapEntries = new Map<string, number>();
      // Note each map's entry count whenever the collector reads it, for the
      // kerntap_bpf_map_entries self-metric, at no extra read cost.
      for (const obj of running.instance.objects) {
        const read = obj.readMap.bind(obj);
        // The native method is read-only on the prototype; shadow it on the instance.
        Object.defineProperty(obj, 'readMap', {
          value: async (name: string): Promise<MapBatch> => {
            const batch = await read(name);
            mapEntries.set(name, batch.count);
            return batch;
          },
        });
      }
      return { running, lastGood: [], errors: 0, lastErrorLogMs: -Infinity, mapEntries };
    });
    this.latest = { seq: 0, timeMs: startMs, families: [] };
  }

  /** Adds families produced outside the collectors (e.g. OTLP export counters) to every snapshot. */
  addSource(source: () => RawFamily[]): void {
    this.sources.push(source);
  }

  get healthy(): boolean {
    return this.consecutiveFailures < this.opts.degradedAfterFailures;
  }

  /** Polls now and then every interval; the first poll's result (or failure) is returned. */
  start(): Promise<Snapshot> {
    const first = this.poll();
    const tick = () => {
      if (this.stopped) return;
      this.timer = setTimeout(() => {
        this.poll().then(tick, (err: unknown) => {
          this.pollFailed(err);
          tick();
        });
      }, this.opts.intervalMs);
      this.timer.unref?.();
    };
    // The caller handles the first poll's failure; the schedule goes on either way.
    first.then(tick, tick);
    return first;
  }

  /**
   * A poll that failed as a whole (outside a collector: the labeler, the
   * cgroup refresh, the self-metrics): counted and logged like a collector
   * failure, and the next poll is still scheduled. Left to reject, it would
   * be an unhandled rejection, which ends the process.
   */
  private pollFailed(err: unknown): void {
    this.consecutiveFailures++;
    this.lastError = (err as Error).message;
    const nowMs = Date.now();
    if (nowMs - this.lastFailureLogMs > 60_000) {
      this.lastFailureLogMs = nowMs;
      this.opts.log.error({ failures: this.consecutiveFailures }, `poll failed, serving the last snapshot: ${this.lastError}`);
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  /** Polls now (or joins the poll in flight). */
  poll(): Promise<Snapshot> {
    if (!this.inFlight) {
      this.inFlight = this.doPoll().finally(() => {
        this.inFlight = undefined;
      });
    }
    return this.inFlight;
  }

  private async doPoll(): Promise<Snapshot> {
    const t0 = process.hrtime.bigint();
    const nowMs = Date.now();
    this.opts.beforePoll?.(nowMs);
    const raw: RawFamily[] = [];
    let failed = false;
    for (const pc of this.per) {
      try {
        pc.lastGood = await pc.running.instance.collect(nowMs);
      } catch (err) {
        failed = true;
        pc.errors++;
        this.lastError = `${pc.running.name}: ${(err as Error).message}`;
        // One line per collector per minute at most, so a broken map does not flood the log.
        if (nowMs - pc.lastErrorLogMs > 60_000) {
          pc.lastErrorLogMs = nowMs;
          this.opts.log.error({ collector: pc.running.name, errors: pc.errors }, `poll failed, serving last good values: ${(err as Error).message}`);
        }
      }
      raw.push(...pc.lastGood);
    }
    this.consecutiveFailures = failed ? this.consecutiveFailures + 1 : 0;

    const families: Family[] = [];
    for (const fam of this.opts.labeler ? await this.opts.labeler.apply(raw) : raw) {
      families.push(...this.tracker.track([fam], nowMs));
      // Tracking 100k series takes ~150 ms: let scrapes in between families.
      await new Promise((resolve) => setImmediate(resolve));
    }
    const self = await this.selfState(families, Number(process.hrtime.bigint() - t0) / 1e9);
    families.push(...this.tracker.track([...selfFamilies(self), ...this.sources.flatMap((source) => source())], nowMs));
    this.seq++;
    this.latest = { seq: this.seq, timeMs: nowMs, families };
    this.emit('snapshot', this.latest);
    return this.latest;
  }

  private async selfState(families: Family[], pollDurationS: number): Promise<SelfState> {
    const programs: SelfState['programs'] = [];
    const maps: SelfState['maps'] = [];
    const overflow: SelfState['overflow'] = [];
    for (const pc of this.per) {
      const { name, instance } = pc.running;
      const counted = instance.countedEntries?.();
      for (const obj of instance.objects) {
        try {
          for (const prog of obj.programs()) {
            programs.push({ collector: name, program: prog.name, runTimeNs: prog.runTimeNs, runCount: prog.runCount, recursionMisses: prog.recursionMisses });
          }
          for (const m of obj.maps()) {
            // Every map's memory counts; entries and capacity only for the maps that hold data (kt_*: kerntap's own counters).
            const bookkeeping = m.internal || m.name.startsWith('kt_');
            const entries = bookkeeping ? undefined : (pc.mapEntries.get(m.name) ?? counted?.get(m.name));
            const memoryBytes = this.opts.mapMemory ? mapMemoryBytes(m, entries, this.opts.mapMemory) : m.memlock;
            maps.push({ collector: name, map: m.name, entries, capacity: bookkeeping ? undefined : m.maxEntries, memoryBytes });
          }
        } catch {
          // object closed during shutdown
        }
      }
      const first = instance.objects[0];
      if (first && instance.dropSlots.length > 0) {
        try {
          const drops = await readDropCounts(first);
          for (const d of instance.dropSlots) overflow.push({ collector: name, map: d.map, count: drops[d.slot] ?? 0 });
        } catch {
          // counted as a poll error by collect() if the object is broken
        }
      }
    }
    const byProm = (m: Map<string, number>) => {
      const out = new Map<string, number>();
      for (const fam of families) {
        const v = m.get(fam.def.name);
        if (v !== undefined) out.set(prometheusName(fam.def), v);
      }
      return out;
    };
    return {
      version: this.opts.version,
      libbpfVersion: this.opts.libbpfVersion,
      collectors: this.opts.collectorStates,
      programs,
      statsEnabled: this.opts.statsEnabled(),
      maps,
      overflow,
      pollDurationS,
      polls: this.seq + 1,
      pollErrors: new Map(this.per.map((pc) => [pc.running.name, pc.errors])),
      series: byProm(this.tracker.seriesCount),
      folded: byProm(this.tracker.folded),
    };
  }
}
