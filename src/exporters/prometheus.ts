/**
 * Renders a Snapshot as Prometheus text (0.0.4) or OpenMetrics 1.0, in
 * prom-client's exact output format and with its content types. Output is
 * rendered once per snapshot and format, then served from cache.
 */
import { createRequire } from 'node:module';
import type { Registry } from 'prom-client';
import { explicitBounds, explicitCounts } from '../model/histogram.js';
import { prometheusLabel, prometheusName } from '../model/metric.js';
import type { Family, Snapshot } from '../model/snapshot.js';

export type ExpositionFormat = 'text' | 'openmetrics';

// Only prom-client's Registry module: its main entry also loads every metric
// type and the default collectors, ~10 MB of RSS this exporter never uses.
const PromRegistry = createRequire(import.meta.url)('prom-client/lib/registry.js') as typeof Registry;

export const CONTENT_TYPES: Record<ExpositionFormat, string> = {
  text: PromRegistry.PROMETHEUS_CONTENT_TYPE,
  openmetrics: PromRegistry.OPENMETRICS_CONTENT_TYPE,
};

function formatLe(bound: number): string {
  return Number.isFinite(bound) ? String(bound) : '+Inf';
}

// prom-client's escaping and number formatting (lib/registry.js, lib/util.js),
// which it does not export. test/unit/exposition-render.test.ts proves the
// output byte-identical to prom-client's Registry.
function escapeString(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}
const LABEL_NEEDS_ESCAPE = /[\\\n"]/;
function escapeLabelValue(s: string): string {
  return LABEL_NEEDS_ESCAPE.test(s) ? escapeString(s).replace(/"/g, '\\"') : s;
}
function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'Nan';
  if (!Number.isFinite(v)) return v < 0 ? '-Inf' : '+Inf';
  return `${v}`;
}

/** The Prometheus label name and value index of each label, in output order. */
export function labelPlan(names: readonly string[]): [string, number][] {
  const plan = new Map<string, number>();
  names.forEach((n, i) => plan.set(prometheusLabel(n), i));
  return [...plan];
}

function labelPairs(plan: [string, number][], values: readonly string[]): string {
  let out = '';
  for (let i = 0; i < plan.length; i++) {
    const [name, index] = plan[i]!;
    out += `${i === 0 ? '' : ','}${name}="${escapeLabelValue(values[index] ?? '')}"`;
  }
  return out;
}

/**
 * Collects the exposition as UTF-8 buffers. Lines are appended to a short
 * string that is encoded and dropped every CHUNK_CHARS, so what stays alive
 * during a big rendering is off the V8 heap (keeping 100k line strings alive
 * until a final join made garbage collection most of the rendering time), and
 * the event loop is handed back between chunks that took over SLICE_MS.
 */
const CHUNK_CHARS = 64 * 1024;
const SLICE_MS = 10;

/** Hands the event loop back once the current slice of rendering took SLICE_MS. */
export class RenderSlice {
  private start = performance.now();

  async yieldIfUsed(): Promise<void> {
    if (performance.now() - this.start < SLICE_MS) return;
    await new Promise((resolve) => setImmediate(resolve));
    this.start = performance.now();
  }
}

class ExpositionWriter {
  private readonly chunks: Buffer[] = [];
  private pending = '';
  private readonly slice = new RenderSlice();

  line(s: string): void {
    this.pending += `${s}\n`;
  }

  /** Called between samples: encodes a full chunk, and yields when the slice is used up. */
  async flushIfFull(): Promise<void> {
    if (this.pending.length < CHUNK_CHARS) return;
    this.encodePending();
    await this.slice.yieldIfUsed();
  }

  finish(): Buffer {
    this.encodePending();
    return Buffer.concat(this.chunks);
  }

  private encodePending(): void {
    this.chunks.push(Buffer.from(this.pending, 'utf8'));
    this.pending = '';
  }
}

async function renderFamily(fam: Family, format: ExpositionFormat, out: ExpositionWriter): Promise<void> {
  let name = prometheusName(fam.def);
  // OpenMetrics names a counter family without _total and its samples with it.
  const openMetricsCounter = format === 'openmetrics' && fam.kind === 'counter';
  if (openMetricsCounter) name = name.replace(/_total$/, '');
  const escapedName = escapeString(name);
  out.line(`# HELP ${escapedName} ${escapeString(fam.def.help)}`);
  out.line(`# TYPE ${escapedName} ${fam.kind}`);
  const plan = labelPlan(fam.def.labels);
  if (fam.kind !== 'histogram') {
    const sampleName = openMetricsCounter ? `${name}_total` : name;
    for (const p of fam.points) {
      const pairs = labelPairs(plan, p.labels);
      out.line(`${sampleName}${pairs ? `{${pairs}}` : ''} ${formatValue(p.value)}`);
      await out.flushIfFull();
    }
    return;
  }
  const range = fam.def.range!;
  const les = [...explicitBounds(range), Infinity].map((b) => `le="${formatLe(b)}"`);
  for (const p of fam.points) {
    const pairs = labelPairs(plan, p.labels);
    const bucketPrefix = `${name}_bucket{${pairs ? `${pairs},` : ''}`;
    const counts = explicitCounts(p.hist, range);
    let cumulative = 0;
    for (let b = 0; b < les.length; b++) {
      cumulative += counts[b]!;
      out.line(`${bucketPrefix}${les[b]}} ${formatValue(cumulative)}`);
    }
    const braced = pairs ? `{${pairs}}` : '';
    out.line(`${name}_sum${braced} ${formatValue(p.hist.sum)}`);
    out.line(`${name}_count${braced} ${formatValue(p.hist.count)}`);
    await out.flushIfFull();
  }
}

/**
 * The exposition of a snapshot, as UTF-8. Written directly rather than
 * through prom-client's Registry, which builds a label object and several
 * arrays per sample (0.67 s for 100k series; BENCHMARKS.md).
 */
export async function renderExposition(snapshot: Snapshot, format: ExpositionFormat): Promise<Buffer> {
  const out = new ExpositionWriter();
  // A family with no points still gets HELP/TYPE lines, so dashboards see it exists.
  // Text separates families with a blank line; OpenMetrics ends with # EOF.
  if (snapshot.families.length === 0) out.line('');
  for (let i = 0; i < snapshot.families.length; i++) {
    if (i > 0 && format === 'text') out.line('');
    await renderFamily(snapshot.families[i]!, format, out);
  }
  if (format === 'openmetrics') out.line('# EOF');
  return out.finish();
}

export async function renderSnapshot(snapshot: Snapshot, format: ExpositionFormat): Promise<string> {
  return (await renderExposition(snapshot, format)).toString('utf8');
}
