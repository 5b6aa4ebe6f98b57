/**
 * The snapshot rendered by prom-client's own Registry (pre-aggregated values
 * as duck-typed metrics): the reference for src/exporters/prometheus.ts in
 * its unit test, and its baseline in the render benchmark.
 */
import { Registry } from 'prom-client';
import { CONTENT_TYPES, type ExpositionFormat } from '../../src/exporters/prometheus.js';
import { explicitBounds, explicitCounts } from '../../src/model/histogram.js';
import { prometheusLabel, prometheusName } from '../../src/model/metric.js';
import type { Snapshot } from '../../src/model/snapshot.js';

type PromValue = { labels: Record<string, string>; value: number; metricName?: string };

export async function renderWithPromClient(snapshot: Snapshot, format: ExpositionFormat): Promise<string> {
  const registry = new (Registry as unknown as new (contentType: string) => Registry)(CONTENT_TYPES[format]);
  for (const fam of snapshot.families) {
    let name = prometheusName(fam.def);
    if (format === 'openmetrics' && fam.kind === 'counter') name = name.replace(/_total$/, '');
    const labelsOf = (values: readonly string[]) => {
      const out: Record<string, string> = {};
      fam.def.labels.forEach((n, i) => { out[prometheusLabel(n)] = values[i] ?? ''; });
      return out;
    };
    const values: PromValue[] = [];
    if (fam.kind === 'histogram') {
      const range = fam.def.range!;
      const bounds = [...explicitBounds(range), Infinity];
      for (const p of fam.points) {
        const labels = labelsOf(p.labels);
        const counts = explicitCounts(p.hist, range);
        let cumulative = 0;
        bounds.forEach((b, i) => {
          cumulative += counts[i]!;
          values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: Number.isFinite(b) ? String(b) : '+Inf' }, value: cumulative });
        });
        values.push({ metricName: `${name}_sum`, labels, value: p.hist.sum }, { metricName: `${name}_count`, labels, value: p.hist.count });
      }
    } else {
      for (const p of fam.points) values.push({ labels: labelsOf(p.labels), value: p.value });
    }
    const metric = { name, help: fam.def.help, type: fam.kind, aggregator: 'sum', values };
    registry.registerMetric({ ...metric, get: async () => metric } as never);
  }
  return registry.metrics();
}
