/**
 * Series bookkeeping between raw collector output and the snapshot:
 *  - label values are sanitised, and points that end up with the same
 *    labels are merged (summed);
 *  - at most maxSeries series per metric; later ones are folded into one
 *    series whose labels are all "~overflow", and the number folded is kept;
 *  - counters never go backwards within a series: a small drop from a read
 *    race is held at the last value, while a changed identity (a cgroup
 *    re-created under the same path) restarts the series with a new start.
 */
import { addHistogram, emptyHistogram, type HistogramValue } from './model/histogram.js';
import type { Family, HistogramPoint, NumberPoint, RawFamily } from './model/snapshot.js';
import { sanitizeLabelValue } from './labels.js';

export const OVERFLOW_LABEL = '~overflow';

interface SeriesState {
  startMs: number;
  identity: string | undefined;
  /** Counters: the last value; histograms: the last count. */
  last: number;
  /** Histograms: the last histogram served, served again when a read comes back lower. */
  lastHist?: HistogramValue;
  lastSeenMs: number;
  /** Polls in a row in which the series was absent. */
  missed: number;
}

/**
 * A series absent from this many polls in a row is forgotten, and starts
 * afresh if it returns; one absent for fewer keeps its start time, so a
 * series that skips a poll is not taken for a reset.
 */
export const FORGET_AFTER_MISSED_POLLS = 5;

interface Merged<V> {
  /** The sanitised labels joined, the series' key in `states`. */
  key: string;
  labels: string[];
  value: V;
  identity: string | undefined;
}

export interface SeriesTrackerOptions {
  maxSeriesPerMetric: number;
  maxLabelLength: number;
  /** Start time given to series that exist at the first poll (program load). */
  startMs: number;
}

export class SeriesTracker {
  private readonly states = new Map<string, Map<string, SeriesState>>();
  /** Series folded into ~overflow in the last snapshot, per metric (Prometheus name not needed: OTel name). */
  readonly folded = new Map<string, number>();
  readonly seriesCount = new Map<string, number>();
  /** The first poll's time: series seen then start at opts.startMs (program load). */
  private firstPollMs: number | undefined;

  constructor(private readonly opts: SeriesTrackerOptions) {}

  /** Tracks the families of the poll at nowMs; a poll may be tracked in several calls. */
  track(families: RawFamily[], nowMs: number): Family[] {
    this.firstPollMs ??= nowMs;
    const out: Family[] = [];
    for (const fam of families) {
      const name = fam.def.name;
      let states = this.states.get(name);
      if (!states) {
        states = new Map();
        this.states.set(name, states);
      }
      if (fam.kind === 'histogram') {
        const merged = this.merge(fam.points, (p) => p.hist,
          states, fam.def.labels.length, name, (a, b) => { addHistogram(a, b); return a; }, cloneHist);
        const points: HistogramPoint[] = merged.map((m) => {
          const st = this.state(states!, m, m.value.count, nowMs);
          let hist = m.value;
          // As for counters: a cumulative histogram never goes down under one start time.
          if (hist.count < st.last && st.lastHist) hist = st.lastHist;
          st.last = hist.count;
          st.lastHist = hist;
          return { labels: m.labels, hist, startMs: st.startMs };
        });
        out.push({ def: fam.def, kind: 'histogram', points });
      } else {
        const merged = this.merge(fam.points, (p) => p.value,
          states, fam.def.labels.length, name, (a, b) => a + b, (v) => v);
        const points: NumberPoint[] = merged.map((m) => {
          const st = this.state(states!, m, m.value, nowMs);
          let value = m.value;
          if (fam.kind === 'counter') {
            if (value < st.last) value = st.last; // read race, same identity: hold
            st.last = value;
          }
          return { labels: m.labels, value, startMs: st.startMs };
        });
        out.push({ def: fam.def, kind: fam.kind, points });
      }
      for (const [key, st] of states) {
        if (st.lastSeenMs !== nowMs && ++st.missed >= FORGET_AFTER_MISSED_POLLS) states.delete(key);
      }
    }
    return out;
  }

  private merge<P extends { labels: string[]; identity?: string }, V>(
    points: readonly P[],
    valueOf: (p: P) => V,
    states: Map<string, SeriesState>,
    labelCount: number,
    metric: string,
    add: (a: V, b: V) => V,
    clone: (v: V) => V,
  ): Merged<V>[] {
    const byKey = new Map<string, Merged<V>>();
    const maxBytes = this.opts.maxLabelLength;
    for (const p of points) {
      const labels = p.labels.map((l) => cleanLabel(l, maxBytes));
      const key = labels.join('\u0000');
      const existing = byKey.get(key);
      if (existing) {
        existing.value = add(existing.value, valueOf(p));
        existing.identity = joinIdentity(existing.identity, p.identity);
      } else {
        byKey.set(key, { key, labels, value: clone(valueOf(p)), identity: p.identity });
      }
    }
    const max = this.opts.maxSeriesPerMetric;
    if (byKey.size <= max) {
      this.folded.set(metric, 0);
      this.seriesCount.set(metric, byKey.size);
      return [...byKey.values()];
    }
    // Over the cap: series already tracked keep their place (so their
    // counters stay continuous), new ones fill what is left, and the rest
    // are summed into one "~overflow" series (one slot is kept for it).
    const kept: Merged<V>[] = [];
    const fresh: Merged<V>[] = [];
    const overflowKey = Array(labelCount).fill(OVERFLOW_LABEL).join('\u0000');
    const rest: Merged<V>[] = [];
    for (const [key, m] of byKey) (key === overflowKey ? rest : states.has(key) ? kept : fresh).push(m);
    const admitted = kept.slice(0, max - 1);
    rest.push(...kept.slice(max - 1));
    for (const m of fresh) (admitted.length < max - 1 ? admitted : rest).push(m);
    const overflow: Merged<V> = { key: overflowKey, labels: Array(labelCount).fill(OVERFLOW_LABEL), value: clone(rest[0]!.value), identity: 'overflow' };
    for (const m of rest.slice(1)) overflow.value = add(overflow.value, m.value);
    admitted.push(overflow);
    this.folded.set(metric, rest.filter((m) => m.identity !== 'overflow').length);
    this.seriesCount.set(metric, admitted.length);
    return admitted;
  }

  private state(states: Map<string, SeriesState>, { key, identity }: Merged<unknown>, value: number, nowMs: number): SeriesState {
    let st = states.get(key);
    if (!st || (st.identity !== identity && identity !== 'overflow')) {
      st = { startMs: nowMs === this.firstPollMs ? this.opts.startMs : nowMs, identity, last: 0, lastSeenMs: nowMs, missed: 0 };
      states.set(key, st);
    } else if (value < st.last && identity === 'overflow') {
      // The overflow series is a sum over changing members: a drop is a reset.
      st.startMs = nowMs;
      st.last = 0;
      delete st.lastHist;
    }
    st.lastSeenMs = nowMs;
    st.missed = 0;
    return st;
  }
}

const SURROGATE = /[\uD800-\uDFFF]/;

/**
 * sanitizeLabelValue, skipped for the usual value that it would return
 * unchanged (no surrogates, and short enough even at 3 UTF-8 bytes per UTF-16
 * unit): this runs for every label of every series on every poll.
 */
function cleanLabel(value: string, maxBytes: number): string {
  return value.length * 3 <= maxBytes && !SURROGATE.test(value) ? value : sanitizeLabelValue(value, maxBytes);
}

function cloneHist(h: HistogramValue): HistogramValue {
  const c = emptyHistogram();
  addHistogram(c, h);
  return c;
}

function joinIdentity(a: string | undefined, b: string | undefined): string | undefined {
  if (a === undefined) return b;
  if (b === undefined || a === b) return a;
  const parts = new Set([...a.split(','), ...b.split(',')]);
  return [...parts].sort().join(',');
}
