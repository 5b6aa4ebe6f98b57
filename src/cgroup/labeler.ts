/**
 * Adds container/pod/systemd identity labels next to `cgroup` on every
 * metric that has one, and optionally folds cgroups into their container or
 * pod. Done once here, on raw families, so the Prometheus and OTLP outputs
 * (which both render the snapshot) see the same effective definitions.
 */
import { defineMetric, type MetricDef } from '../model/metric.js';
import type { RawFamily } from '../model/snapshot.js';
import { aggregatePath, identityOf, IDENTITY_LABELS, type Aggregation, type CgroupIdentity } from './identity.js';

const MAX_CACHED = 100_000;

export class CgroupLabeler {
  private readonly defs = new Map<MetricDef, MetricDef>();
  private readonly cache = new Map<string, { path: string; identity: string[] }>();

  constructor(private readonly how: Aggregation) {}

  /** The definition as exported: identity labels appended after the collector's own. */
  effective(def: MetricDef): MetricDef {
    if (!def.labels.includes('cgroup')) return def;
    let out = this.defs.get(def);
    if (!out) {
      out = defineMetric({ ...def, labels: [...def.labels, ...IDENTITY_LABELS] });
      this.defs.set(def, out);
    }
    return out;
  }

  private resolve(cgroup: string): { path: string; identity: string[] } {
    let hit = this.cache.get(cgroup);
    if (!hit) {
      // "~overflow", "~none" and "unknown_cgroup_id:N" are not paths.
      const isPath = cgroup.startsWith('/');
      const path = isPath ? aggregatePath(cgroup, this.how) : cgroup;
      const id: CgroupIdentity | undefined = isPath ? identityOf(path) : undefined;
      hit = { path, identity: IDENTITY_LABELS.map((k) => id?.[k] ?? '') };
      if (this.cache.size >= MAX_CACHED) this.cache.clear();
      this.cache.set(cgroup, hit);
    }
    return hit;
  }

  apply(families: RawFamily[]): RawFamily[] {
    return families.map((fam) => {
      const at = fam.def.labels.indexOf('cgroup');
      if (at < 0) return fam;
      const def = this.effective(fam.def);
      const relabel = <P extends { labels: string[] }>(p: P): P => {
        const { path, identity } = this.resolve(p.labels[at]!);
        const labels = [...p.labels];
        labels[at] = path;
        return { ...p, labels: [...labels, ...identity] };
      };
      return fam.kind === 'histogram'
        ? { def, kind: fam.kind, points: fam.points.map(relabel) }
        : { def, kind: fam.kind, points: fam.points.map(relabel) };
    });
  }
}
