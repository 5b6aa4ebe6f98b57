/**
 * OTLP push. The kernel already aggregated everything, so nothing is
 * recorded through instruments: a MetricProducer turns the poller's latest
 * Snapshot into OTLP metric data, and @opentelemetry/sdk-metrics' periodic
 * reader sends it through the OTLP http/protobuf, http/json or gRPC exporter.
 *
 * Cumulative series carry their start time from the snapshot (program load,
 * or the series' last reset). Delta series are computed here: the baseline
 * of a series advances only when an export succeeded, so a failed export's
 * interval is sent with the next one instead of being lost.
 */
import { hostname } from 'node:os';
import type { Agent } from 'node:https';
import { millisToHrTime, ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { ValueType, type Attributes } from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  DataPointType,
  MeterProvider,
  PeriodicExportingMetricReader,
  type CollectionResult,
  type MetricData,
  type MetricProducer,
  type PushMetricExporter,
  type ResourceMetrics,
  type ScopeMetrics,
} from '@opentelemetry/sdk-metrics';
import { OTLPMetricExporter as ProtoExporter } from '@opentelemetry/exporter-metrics-otlp-proto';
import { OTLPMetricExporter as JsonExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import type { Logger } from 'pino';
import { emptyHistogram, explicitBounds, explicitCounts, exponentialBuckets, HIST_SLOTS, type HistogramValue } from '../model/histogram.js';
import { defineMetric, type MetricDef } from '../model/metric.js';
import { numberFamily, type Family, type RawFamily, type Snapshot } from '../model/snapshot.js';
import { plainHeadersWarning, type OtlpSettings } from './otlp-settings.js';

export const otlpExports = defineMetric({
  name: 'kerntap.otlp.exports', kind: 'counter', unit: '{export}', labels: ['result'],
  help: 'OTLP export attempts by result (success, failure); each includes the exporter\'s own retries.',
});

function attributesOf(def: MetricDef, values: readonly string[]): Attributes {
  const attrs: Attributes = {};
  def.labels.forEach((label, i) => {
    attrs[label] = values[i] ?? '';
  });
  return attrs;
}

type Baseline = { startMs: number; timeMs: number; value: number | HistogramValue };

/**
 * a − b, or a itself when some bucket went down (e.g. the ~overflow series
 * lost a member): treated as a reset within the interval, as Prometheus'
 * rate() does, since OTLP bucket counts cannot be negative.
 */
function subtractHistogram(a: HistogramValue, b: HistogramValue): HistogramValue {
  const out = emptyHistogram();
  for (let k = 0; k < HIST_SLOTS; k++) {
    out.slots[k] = a.slots[k]! - b.slots[k]!;
    if (out.slots[k]! < 0) return a;
  }
  out.sum = a.sum - b.sum;
  out.count = a.count - b.count;
  return out;
}

/** Turns snapshots into OTLP scope metrics, computing deltas when asked. */
export class SnapshotProducer implements MetricProducer {
  private committed = new Map<string, Baseline>();
  private committedSeq = -1;
  private seq = 0;
  /** What each produced ScopeMetrics would make the baseline, once exported. */
  private readonly pending = new WeakMap<ScopeMetrics, { seq: number; baselines: Map<string, Baseline> }>();

  constructor(
    private readonly latest: () => Snapshot,
    private readonly temporality: 'cumulative' | 'delta',
    private readonly histogramForm: 'explicit' | 'exponential',
    private readonly version: string,
  ) {}

  async collect(): Promise<CollectionResult> {
    const snapshot = this.latest();
    const baselines = new Map<string, Baseline>();
    const metrics = snapshot.families.map((fam) => this.metric(fam, snapshot.timeMs, baselines)).filter((m): m is MetricData => m !== undefined);
    const scope: ScopeMetrics = { scope: { name: 'kerntap', version: this.version }, metrics };
    this.pending.set(scope, { seq: ++this.seq, baselines });
    return {
      resourceMetrics: { resource: resourceFromAttributes({}), scopeMetrics: [scope] },
      errors: [],
    };
  }

  /**
   * Called when an export succeeded: its values become the delta baseline.
   * Exports are matched by their ScopeMetrics object, so the reader must not
   * split them (no maxExportBatchSize).
   */
  commit(resourceMetrics: ResourceMetrics): void {
    for (const scope of resourceMetrics.scopeMetrics) {
      const p = this.pending.get(scope);
      if (p && p.seq > this.committedSeq) {
        this.committedSeq = p.seq;
        this.committed = p.baselines;
      }
    }
  }

  private metric(fam: Family, timeMs: number, baselines: Map<string, Baseline>): MetricData | undefined {
    const descriptor = { name: fam.def.name, description: fam.def.help, unit: fam.def.unit, valueType: ValueType.DOUBLE };
    const endTime = millisToHrTime(timeMs);
    const delta = this.temporality === 'delta';
    const aggregationTemporality = delta ? AggregationTemporality.DELTA : AggregationTemporality.CUMULATIVE;

    /** Start time and baseline of a point; undefined when there's no new interval to report. */
    const interval = <V extends number | HistogramValue>(labels: readonly string[], startMs: number, value: V) => {
      const key = `${fam.def.name}\u0000${labels.join('\u0000')}`;
      baselines.set(key, { startMs, timeMs, value });
      if (!delta) return { startMs, base: undefined };
      const b = this.committed.get(key);
      if (!b || b.startMs !== startMs) return { startMs, base: undefined }; // new or reset: all of it
      if (b.timeMs >= timeMs) return undefined; // this snapshot was already sent
      return { startMs: b.timeMs, base: b.value as V };
    };

    if (fam.kind === 'gauge') {
      return {
        descriptor,
        aggregationTemporality: AggregationTemporality.CUMULATIVE,
        dataPointType: DataPointType.GAUGE,
        dataPoints: fam.points.map((p) => ({
          startTime: millisToHrTime(p.startMs), endTime, attributes: attributesOf(fam.def, p.labels), value: p.value,
        })),
      };
    }
    if (fam.kind === 'counter') {
      const dataPoints = [];
      for (const p of fam.points) {
        const iv = interval(p.labels, p.startMs, p.value);
        if (!iv) continue;
        dataPoints.push({
          startTime: millisToHrTime(iv.startMs), endTime, attributes: attributesOf(fam.def, p.labels),
          value: iv.base === undefined ? p.value : p.value - iv.base,
        });
      }
      return { descriptor, aggregationTemporality, dataPointType: DataPointType.SUM, isMonotonic: true, dataPoints };
    }

    if (fam.kind !== 'histogram') return undefined;
    const range = fam.def.range!;
    const points = [];
    for (const p of fam.points) {
      const iv = interval(p.labels, p.startMs, p.hist);
      if (!iv) continue;
      const h = iv.base === undefined ? p.hist : subtractHistogram(p.hist, iv.base);
      points.push({ startTime: millisToHrTime(iv.startMs), endTime, attributes: attributesOf(fam.def, p.labels), h });
    }
    if (this.histogramForm === 'exponential') {
      return {
        descriptor, aggregationTemporality, dataPointType: DataPointType.EXPONENTIAL_HISTOGRAM,
        dataPoints: points.map(({ h, ...rest }) => {
          const exp = exponentialBuckets(h);
          return {
            ...rest,
            value: {
              count: h.count, sum: h.sum, scale: exp.scale, zeroCount: 0,
              positive: { offset: exp.offset, bucketCounts: exp.counts },
              negative: { offset: 0, bucketCounts: [] },
            },
          };
        }),
      };
    }
    const boundaries = explicitBounds(range);
    return {
      descriptor, aggregationTemporality, dataPointType: DataPointType.HISTOGRAM,
      dataPoints: points.map(({ h, ...rest }) => ({
        ...rest,
        value: { buckets: { boundaries, counts: explicitCounts(h, range) }, sum: h.sum, count: h.count },
      })),
    };
  }
}

/**
 * Wraps the OTLP exporter: counts results, commits delta baselines, logs
 * failures sparingly, and keeps one request in flight at most. The reader
 * stops waiting after its timeout while the request may still be retrying;
 * an export started then would carry the same delta interval again, and
 * queueing would let memory grow with a slow endpoint. So it fails at once
 * (counted), and its interval goes out with the next export.
 */
class AccountingExporter implements PushMetricExporter {
  readonly results = { success: 0, failure: 0 };
  private inFlight = false;
  private lastLogMs = -Infinity;
  private failuresSinceLog = 0;

  constructor(
    private readonly inner: PushMetricExporter,
    private readonly producer: SnapshotProducer,
    private readonly log: Logger,
  ) {}

  export(metrics: ResourceMetrics, done: (result: ExportResult) => void): void {
    if (this.inFlight) {
      const error = new Error('the previous export is still in flight');
      this.failed(error);
      done({ code: ExportResultCode.FAILED, error });
      return;
    }
    this.inFlight = true;
    this.inner.export(metrics, (result) => {
      this.inFlight = false;
      if (result.code === ExportResultCode.SUCCESS) {
        this.results.success++;
        this.producer.commit(metrics);
      } else {
        this.failed(result.error);
      }
      done(result);
    });
  }

  private failed(error: Error | undefined): void {
    this.results.failure++;
    this.failuresSinceLog++;
    const now = Date.now();
    if (now - this.lastLogMs < 60_000) return;
    // The error text names the status or network error, never the headers.
    this.log.warn({ failures: this.failuresSinceLog }, `OTLP export failed: ${error?.message ?? 'unknown error'}`);
    this.lastLogMs = now;
    this.failuresSinceLog = 0;
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush();
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }

  selectAggregationTemporality = () => AggregationTemporality.CUMULATIVE;
}

export interface OtlpPipeline {
  /** kerntap_otlp_exports_total, for the snapshot. */
  families(): RawFamily[];
  /** One last export of the latest snapshot, bounded in time, then stop. */
  shutdown(timeoutMs: number): Promise<void>;
}

/**
 * The OTel gRPC exporter, loaded only when asked for (it brings in grpc-js).
 * TLS as over HTTP: an https endpoint with the configured CA (or the system
 * roots) and client certificate; headers become call metadata (checked by
 * resolveOtlpSettings).
 */
async function grpcExporter(settings: OtlpSettings): Promise<PushMetricExporter> {
  const [{ OTLPMetricExporter }, grpc] = await Promise.all([import('@opentelemetry/exporter-metrics-otlp-grpc'), import('@grpc/grpc-js')]);
  const metadata = new grpc.Metadata();
  for (const [key, value] of Object.entries(settings.headers)) metadata.set(key, value);
  const credentials = settings.url.startsWith('https:')
    ? grpc.credentials.createSsl(settings.tls.ca ?? null, settings.tls.key ?? null, settings.tls.cert ?? null)
    : grpc.credentials.createInsecure();
  return new OTLPMetricExporter({
    url: settings.url, metadata, credentials, timeoutMillis: settings.timeoutMs, compression: settings.compression as never,
  });
}

function httpExporter(settings: OtlpSettings): PushMetricExporter {
  const base = {
    url: settings.url,
    headers: settings.headers,
    timeoutMillis: settings.timeoutMs,
    compression: settings.compression as never,
    ...(settings.url.startsWith('https:') && (settings.tls.ca || settings.tls.cert)
      ? { httpAgentOptions: { ...settings.tls, keepAlive: true } satisfies ConstructorParameters<typeof Agent>[0] }
      : {}),
  };
  return settings.protocol === 'http/json' ? new JsonExporter(base) : new ProtoExporter(base);
}

export async function startOtlp(settings: OtlpSettings, latest: () => Snapshot, version: string, log: Logger): Promise<OtlpPipeline> {
  const inner = settings.protocol === 'grpc' ? await grpcExporter(settings) : httpExporter(settings);
  const producer = new SnapshotProducer(latest, settings.temporality, settings.histogram, version);
  const exporter = new AccountingExporter(inner, producer, log);

  const resource = resourceFromAttributes({
    'service.name': 'kerntap',
    'service.version': version,
    'host.name': hostname(),
    'os.type': 'linux',
    ...settings.resourceAttributes,
  });

  const reader = new PeriodicExportingMetricReader({
    exporter,
    exportIntervalMillis: settings.intervalMs,
    exportTimeoutMillis: Math.min(settings.intervalMs, settings.timeoutMs + 1_000),
    metricProducers: [producer],
  });
  const provider = new MeterProvider({ resource, readers: [reader] });
  const plain = plainHeadersWarning(settings);
  if (plain) log.warn(plain);
  log.info({ url: new URL(settings.url).origin, protocol: settings.protocol, temporality: settings.temporality, histogram: settings.histogram, interval_ms: settings.intervalMs }, 'OTLP push on');

  return {
    families: () => [
      numberFamily(otlpExports, [
        { labels: ['success'], value: exporter.results.success },
        { labels: ['failure'], value: exporter.results.failure },
      ]),
    ],
    async shutdown(timeoutMs: number) {
      const timer = new Promise<void>((resolve) => setTimeout(resolve, timeoutMs).unref());
      await Promise.race([provider.shutdown({ timeoutMillis: timeoutMs }).catch(() => undefined), timer]);
    },
  };
}
