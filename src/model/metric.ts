/**
 * A metric is defined once: its OTel name, unit, kind, help and label names.
 * The Prometheus name is derived from these by the standard OTel→Prometheus
 * translation, so /metrics and OTLP can never disagree on what a metric is.
 */

export type MetricKind = 'counter' | 'gauge' | 'histogram';

export interface HistogramRange {
  /** Lowest finite bucket bound exported, as a power of two in seconds: 2^minExp. */
  minExp: number;
  /** Highest finite bucket bound exported, 2^maxExp; above it is +Inf. */
  maxExp: number;
}

export interface MetricDef {
  /** OTel name, dot separated, always starting with `kerntap.`. */
  readonly name: string;
  readonly kind: MetricKind;
  /** UCUM unit: 's', 'By', '1', or an annotation such as '{connection}'; '' for none. */
  readonly unit: string;
  readonly help: string;
  /**
   * Attribute names, in the order series carry their values: OTel
   * semantic-convention names where one exists ("k8s.pod.uid"); the
   * Prometheus label is the standard translation (prometheusLabel()).
   */
  readonly labels: readonly string[];
  /** Histograms: the bounds exported as explicit buckets. */
  readonly range?: HistogramRange;
}

/** Prometheus suffixes for UCUM units (OTel "prometheus compatibility" spec, abridged). */
const UNIT_WORDS: Record<string, string> = {
  s: 'seconds',
  ms: 'milliseconds',
  us: 'microseconds',
  ns: 'nanoseconds',
  By: 'bytes',
  KiBy: 'kibibytes',
  MiBy: 'mebibytes',
  bit: 'bits',
  Hz: 'hertz',
  '%': 'percent',
};

/** The unit part of a Prometheus name; '' when the unit adds nothing (annotations, none). */
export function prometheusUnit(def: Pick<MetricDef, 'unit' | 'kind'>): string {
  const unit = def.unit.replace(/\{[^}]*\}/g, '').trim();
  if (unit === '') return '';
  if (unit === '1') return def.kind === 'gauge' ? 'ratio' : '';
  const per = unit.split('/');
  const words = per.map((u) => UNIT_WORDS[u] ?? u);
  return words.length === 2 ? `${words[0]}_per_${words[1]}` : words.join('_');
}

function sanitize(name: string): string {
  return name.replace(/[^a-zA-Z0-9_:]/g, '_').replace(/_+/g, '_').replace(/^_|_$/g, '');
}

/** `kerntap.cgroup.cpu.time` (s, counter) → `kerntap_cgroup_cpu_time_seconds_total`. */
export function prometheusName(def: Pick<MetricDef, 'name' | 'unit' | 'kind'>): string {
  let name = sanitize(def.name);
  const unit = sanitize(prometheusUnit(def));
  if (unit && !name.split('_').join('_').endsWith(`_${unit}`) && !name.includes(`_${unit}_`)) {
    name = `${name}_${unit}`;
  }
  if (def.kind === 'counter' && !name.endsWith('_total')) name = `${name}_total`;
  return name;
}

/** `k8s.pod.uid` → `k8s_pod_uid`: the OTel attribute → Prometheus label translation. */
export function prometheusLabel(attribute: string): string {
  return attribute.replace(/\./g, '_');
}

export function defineMetric(def: MetricDef): MetricDef {
  if (!/^kerntap\.[a-z0-9_.]+$/.test(def.name)) {
    throw new Error(`metric name ${JSON.stringify(def.name)} must be lower-case, dot separated, prefixed kerntap.`);
  }
  if (def.kind === 'histogram' && !def.range) {
    throw new Error(`histogram ${def.name} needs a bucket range`);
  }
  const translated = new Set<string>();
  for (const label of def.labels) {
    if (!/^[a-z_][a-z0-9_]*(\.[a-z0-9_]+)*$/.test(label) || label === 'le' || label.startsWith('__')) {
      throw new Error(`metric ${def.name}: invalid label name ${JSON.stringify(label)}`);
    }
    const prom = prometheusLabel(label);
    if (translated.has(prom)) throw new Error(`metric ${def.name}: two labels translate to ${prom}`);
    translated.add(prom);
  }
  return Object.freeze({ ...def, labels: Object.freeze([...def.labels]) });
}
