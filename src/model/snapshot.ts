/**
 * The snapshot model: what one poll produced. Both the Prometheus and the
 * OTLP exporters render from it, so they always show the same numbers.
 */
import type { HistogramValue } from './histogram.js';
import type { MetricDef } from './metric.js';

/** A point as a collector reports it, before series bookkeeping. */
export interface RawNumberPoint {
  labels: string[];
  value: number;
  /**
   * What the series stands for in the kernel (e.g. a cgroup id). When it
   * changes under the same labels (a cgroup deleted and re-created with the
   * same path), the series restarts instead of going backwards.
   */
  identity?: string;
}

export interface RawHistogramPoint {
  labels: string[];
  hist: HistogramValue;
  identity?: string;
}

export type RawFamily =
  | { def: MetricDef; kind: 'counter' | 'gauge'; points: RawNumberPoint[] }
  | { def: MetricDef; kind: 'histogram'; points: RawHistogramPoint[] };

export interface NumberPoint {
  labels: readonly string[];
  value: number;
  /** Start of the series (ms since epoch): when first seen, or its last reset. */
  startMs: number;
}

export interface HistogramPoint {
  labels: readonly string[];
  hist: HistogramValue;
  startMs: number;
}

export type Family =
  | { def: MetricDef; kind: 'counter' | 'gauge'; points: NumberPoint[] }
  | { def: MetricDef; kind: 'histogram'; points: HistogramPoint[] };

export interface Snapshot {
  /** Increases by one per poll. */
  seq: number;
  /** When the maps were read (ms since epoch). */
  timeMs: number;
  families: Family[];
}

export function numberFamily(def: MetricDef, points: RawNumberPoint[]): RawFamily {
  if (def.kind === 'histogram') throw new Error(`${def.name} is a histogram`);
  return { def, kind: def.kind, points };
}

export function histogramFamily(def: MetricDef, points: RawHistogramPoint[]): RawFamily {
  if (def.kind !== 'histogram') throw new Error(`${def.name} is not a histogram`);
  return { def, kind: 'histogram', points };
}
