/**
 * Renders a Snapshot as Prometheus text (0.0.4) or OpenMetrics 1.0 through
 * prom-client. The values are pre-aggregated, so each family is registered
 * as a duck-typed metric whose get() returns the snapshot's points. Output is
 * rendered once per snapshot and format, then served from cache.
 */
import { Registry } from 'prom-client';
import { explicitBounds, explicitCounts } from '../model/histogram.js';
import { prometheusName } from '../model/metric.js';
import type { Family, Snapshot } from '../model/snapshot.js';

export type ExpositionFormat = 'text' | 'openmetrics';

export const CONTENT_TYPES: Record<ExpositionFormat, string> = {
  text: Registry.PROMETHEUS_CONTENT_TYPE,
  openmetrics: Registry.OPENMETRICS_CONTENT_TYPE,
};

/** Picks OpenMetrics when the Accept header asks for it (as Prometheus does), text otherwise. */
export function negotiateFormat(accept: string | undefined): ExpositionFormat {
  if (!accept) return 'text';
  for (const part of accept.split(',')) {
    const [type, ...params] = part.trim().split(';').map((s) => s.trim());
    if (type !== 'application/openmetrics-text') continue;
    const q = params.find((p) => p.startsWith('q='));
    if (q && Number(q.slice(2)) === 0) continue;
    const version = params.find((p) => p.startsWith('version='));
    if (!version || version === 'version=1.0.0' || version === 'version=0.0.1') return 'openmetrics';
  }
  return 'text';
}

type PromValue = { labels: Record<string, string | number>; value: number; metricName?: string };

function labelObject(names: readonly string[], values: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < names.length; i++) out[names[i]!] = values[i] ?? '';
  return out;
}

function formatLe(bound: number): string {
  return Number.isFinite(bound) ? String(bound) : '+Inf';
}

export function familyValues(fam: Family, name: string): PromValue[] {
  if (fam.kind !== 'histogram') {
    return fam.points.map((p) => ({ labels: labelObject(fam.def.labels, p.labels), value: p.value }));
  }
  const range = fam.def.range!;
  const bounds = [...explicitBounds(range), Infinity];
  const values: PromValue[] = [];
  for (const p of fam.points) {
    const labels = labelObject(fam.def.labels, p.labels);
    const counts = explicitCounts(p.hist, range);
    let cumulative = 0;
    for (let i = 0; i < bounds.length; i++) {
      cumulative += counts[i]!;
      values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: formatLe(bounds[i]!) }, value: cumulative });
    }
    values.push({ metricName: `${name}_sum`, labels, value: p.hist.sum });
    values.push({ metricName: `${name}_count`, labels, value: p.hist.count });
  }
  return values;
}

function duckMetric(fam: Family, format: ExpositionFormat) {
  let name = prometheusName(fam.def);
  // OpenMetrics names a counter family without _total; prom-client appends it to samples.
  if (format === 'openmetrics' && fam.kind === 'counter') name = name.replace(/_total$/, '');
  const values = familyValues(fam, name);
  return {
    name,
    help: fam.def.help,
    type: fam.kind,
    aggregator: 'sum' as const,
    get: async () => ({ name, help: fam.def.help, type: fam.kind, aggregator: 'sum', values }),
  };
}

export async function renderSnapshot(snapshot: Snapshot, format: ExpositionFormat): Promise<string> {
  const registry = new (Registry as unknown as new (contentType: string) => Registry)(CONTENT_TYPES[format]);
  for (const fam of snapshot.families) {
    // A family with no points still gets HELP/TYPE lines, so dashboards see it exists.
    registry.registerMetric(duckMetric(fam, format) as never);
  }
  return registry.metrics();
}

/** Caches the rendering of the latest snapshot per format. */
export class ExpositionCache {
  private seq = -1;
  private readonly rendered = new Map<ExpositionFormat, Promise<string>>();

  get(snapshot: Snapshot, format: ExpositionFormat): Promise<string> {
    if (snapshot.seq !== this.seq) {
      this.seq = snapshot.seq;
      this.rendered.clear();
    }
    let out = this.rendered.get(format);
    if (!out) {
      out = renderSnapshot(snapshot, format);
      this.rendered.set(format, out);
    }
    return out;
  }
}
