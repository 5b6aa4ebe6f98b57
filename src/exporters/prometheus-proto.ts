/**
 * Renders a Snapshot in the Prometheus protobuf exposition: length-delimited
 * io.prometheus.client.MetricFamily messages (client_model metrics.proto,
 * shipped in proto/), encoded by protobufjs.
 *
 * Histograms carry both forms: the classic buckets (as in the text format,
 * so always_scrape_classic_histograms sees the same series) and the native
 * schema-0 buckets, exact from the kernel slots: slot k (upper bound
 * 2^(k-20) s) is native bucket k-20, covering (2^(k-21), 2^(k-20)]. The
 * kernel does not tell a zero duration from one below 2^-20 s (both land in
 * slot 0), so slot 0 is the ordinary bucket -20, the zero bucket has
 * threshold 0 and stays empty, as in the OTLP exponential export.
 *
 * Counters and histograms carry the series start (first seen or last reset)
 * as their created timestamp.
 */
import path from 'node:path';
import protobuf from 'protobufjs';
import { explicitBounds, explicitCounts, HIST_SLOTS, SLOT0_EXP, type HistogramValue } from '../model/histogram.js';
import { prometheusName } from '../model/metric.js';
import type { Family, Snapshot } from '../model/snapshot.js';
import { packageRoot } from '../bpf/native.js';
import { labelPlan, RenderSlice } from './prometheus.js';

export const PROTOBUF_CONTENT_TYPE = 'application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited';

/**
 * The client_model types (keepCase: field names as in the .proto). Loaded,
 * and their encoders generated, when this module is (scrape-format.ts loads
 * it at the first protobuf scrape, which then blocks ~50 ms once), not in
 * the middle of encoding a family.
 */
const model = (() => {
  const file = path.join(packageRoot(), 'proto/io/prometheus/client/metrics.proto');
  let root: protobuf.Root;
  try {
    root = new protobuf.Root().loadSync(file, { keepCase: true });
  } catch (err) {
    throw new Error(`cannot load the Prometheus exposition schema ${file}: ${(err as Error).message}`);
  }
  const family = root.lookupType('io.prometheus.client.MetricFamily');
  // protobufjs generates each type's encoder on first use: one of every kind now.
  const ts = { seconds: 0, nanos: 0 };
  family.encode({
    name: 'warm_up', help: '', type: 0,
    metric: [
      { label: [{ name: 'a', value: 'b' }], counter: { value: 0, created_timestamp: ts } },
      { gauge: { value: 0 } },
      { histogram: { sample_count: 0, sample_sum: 0, bucket: [{ upper_bound: 1, cumulative_count: 0 }], created_timestamp: ts, schema: 0, zero_threshold: 0, zero_count: 0, positive_span: [{ offset: 0, length: 1 }], positive_delta: [1] } },
    ],
  }).finish();
  return { family, metricType: root.lookupEnum('io.prometheus.client.MetricType') };
})();

export function clientModel(): { family: protobuf.Type; metricType: protobuf.Enum } {
  return model;
}

/** Metrics per encoded piece of a family: small enough to yield between, big enough to amortise the call. */
const METRICS_PER_PIECE = 128;

/** Native buckets may span a gap of this many empty buckets instead of opening a new span (as client_golang does). */
const MAX_SPAN_GAP = 2;

function timestamp(ms: number): { seconds: number; nanos: number } {
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

interface NativeBuckets {
  positive_span: { offset: number; length: number }[];
  positive_delta: number[];
}

/** Schema-0 spans and count deltas of a kernel histogram. */
export function nativeBuckets(h: HistogramValue): NativeBuckets {
  const spans: { offset: number; length: number }[] = [];
  const deltas: number[] = [];
  let previousCount = 0;
  let lastIndex = 0;
  for (let k = 0; k < HIST_SLOTS; k++) {
    const count = h.slots[k]!;
    if (count === 0) continue;
    const index = k + SLOT0_EXP;
    const gap = index - lastIndex - 1;
    const span = spans.at(-1);
    if (span && gap <= MAX_SPAN_GAP) {
      for (let i = 0; i < gap; i++) {
        deltas.push(-previousCount);
        previousCount = 0;
      }
      span.length += gap + 1;
    } else {
      spans.push({ offset: span ? gap : index, length: 1 });
    }
    deltas.push(count - previousCount);
    previousCount = count;
    lastIndex = index;
  }
  // A no-op span marks an empty histogram as native (metrics.proto).
  return { positive_span: spans.length ? spans : [{ offset: 0, length: 0 }], positive_delta: deltas };
}

function metricOf(fam: Family, index: number, labelNames: [string, number][], bounds: number[]): object {
  const label = labelNames.map(([name, i]) => ({ name, value: fam.points[index]!.labels[i] ?? '' }));
  if (fam.kind !== 'histogram') {
    const p = fam.points[index]!;
    return fam.kind === 'gauge' ? { label, gauge: { value: p.value } } : { label, counter: { value: p.value, created_timestamp: timestamp(p.startMs) } };
  }
  const { hist: h, startMs } = fam.points[index]!;
  const counts = explicitCounts(h, fam.def.range!);
  let cumulative = 0;
  return {
    label,
    histogram: {
      sample_count: h.count,
      sample_sum: h.sum,
      bucket: bounds.map((upper_bound, b) => ({ upper_bound, cumulative_count: (cumulative += counts[b]!) })),
      created_timestamp: timestamp(startMs),
      schema: 0,
      zero_threshold: 0,
      zero_count: 0,
      ...nativeBuckets(h),
    },
  };
}

/**
 * One family as a length-delimited MetricFamily. Its metrics are encoded in
 * pieces, each a MetricFamily holding only some of them: protobuf merges
 * concatenated messages (repeated fields append), so header + pieces is the
 * whole family, and the event loop can be handed back between pieces.
 */
async function encodeFamily(fam: Family, slice: RenderSlice, out: Uint8Array[]): Promise<void> {
  const { family, metricType } = clientModel();
  const pieces = [family.encode({ name: prometheusName(fam.def), help: fam.def.help, type: metricType.values[fam.kind.toUpperCase()] }).finish()];
  const labelNames = labelPlan(fam.def.labels);
  const bounds = fam.kind === 'histogram' ? [...explicitBounds(fam.def.range!), Infinity] : [];
  for (let start = 0; start < fam.points.length; start += METRICS_PER_PIECE) {
    const metric = [];
    for (let i = start; i < Math.min(start + METRICS_PER_PIECE, fam.points.length); i++) metric.push(metricOf(fam, i, labelNames, bounds));
    pieces.push(family.encode({ metric }).finish());
    await slice.yieldIfUsed();
  }
  out.push(protobuf.Writer.create().uint32(pieces.reduce((n, piece) => n + piece.length, 0)).finish(), ...pieces);
}

export async function renderProtobuf(snapshot: Snapshot): Promise<Buffer> {
  const slice = new RenderSlice();
  const out: Uint8Array[] = [];
  for (const fam of snapshot.families) await encodeFamily(fam, slice, out);
  return Buffer.concat(out);
}
