/**
 * Conversions of the kernel's log2 histograms (bpf/include/kt_hist.h).
 *
 * Kernel slot k counts durations d with 2^(k-21) s < d <= 2^(k-20) s
 * (slot 0: d <= 2^-20 s). All three exported forms are exact:
 *  - Prometheus classic / OTel explicit buckets: le = 2^e s, e = k - 20;
 *  - OTel base-2 exponential at scale 0: bucket index i covers (2^i, 2^(i+1)],
 *    so slot k is index k - 21;
 *  - Prometheus native histogram, schema 0: index k - 20.
 */
import type { HistogramRange } from './metric.js';

export const HIST_SLOTS = 48;
/** u64 words per kernel histogram value: the slots, then the sum in ns. */
export const HIST_WORDS = HIST_SLOTS + 1;
/** Exponent (base 2, seconds) of slot 0's upper bound. */
export const SLOT0_EXP = -20;

export interface HistogramValue {
  /** Counts per kernel slot (length HIST_SLOTS), not cumulative. */
  slots: Float64Array;
  /** Sum of observations in seconds. */
  sum: number;
  count: number;
}

export function emptyHistogram(): HistogramValue {
  return { slots: new Float64Array(HIST_SLOTS), sum: 0, count: 0 };
}

/** Decodes one kernel `struct kt_hist` (HIST_WORDS u64 words starting at offset). */
export function decodeHistogram(words: BigUint64Array, offset: number): HistogramValue {
  const slots = new Float64Array(HIST_SLOTS);
  let count = 0;
  for (let k = 0; k < HIST_SLOTS; k++) {
    const n = Number(words[offset + k]);
    slots[k] = n;
    count += n;
  }
  return { slots, sum: Number(words[offset + HIST_SLOTS]) / 1e9, count };
}

export function addHistogram(into: HistogramValue, from: HistogramValue): void {
  for (let k = 0; k < HIST_SLOTS; k++) into.slots[k]! += from.slots[k]!;
  into.sum += from.sum;
  into.count += from.count;
}

/** Finite explicit bucket bounds in seconds for a range: 2^minExp … 2^maxExp. */
export function explicitBounds(range: HistogramRange): number[] {
  const bounds: number[] = [];
  for (let e = range.minExp; e <= range.maxExp; e++) bounds.push(2 ** e);
  return bounds;
}

/**
 * Per-bucket (non-cumulative) counts for explicitBounds(range) plus a last
 * +Inf bucket. Slots below the range fold into the first bucket, slots above
 * into +Inf; counts are never approximated, only coarsened.
 */
export function explicitCounts(h: HistogramValue, range: HistogramRange): number[] {
  const n = range.maxExp - range.minExp + 2;
  const counts = new Array<number>(n).fill(0);
  for (let k = 0; k < HIST_SLOTS; k++) {
    const c = h.slots[k]!;
    if (c === 0) continue;
    const e = k + SLOT0_EXP;
    const i = e <= range.minExp ? 0 : e > range.maxExp ? n - 1 : e - range.minExp;
    counts[i]! += c;
  }
  return counts;
}

export interface ExponentialBuckets {
  scale: 0;
  /** Index of the first bucket; bucket offset+j covers (2^(offset+j), 2^(offset+j+1)]. */
  offset: number;
  counts: number[];
}

/** OTel base-2 exponential buckets at scale 0, trimmed to the non-empty span. */
export function exponentialBuckets(h: HistogramValue): ExponentialBuckets {
  let first = -1;
  let last = -1;
  for (let k = 0; k < HIST_SLOTS; k++) {
    if (h.slots[k]! > 0) {
      if (first < 0) first = k;
      last = k;
    }
  }
  if (first < 0) return { scale: 0, offset: 0, counts: [] };
  return { scale: 0, offset: first + SLOT0_EXP - 1, counts: Array.from(h.slots.subarray(first, last + 1)) };
}
