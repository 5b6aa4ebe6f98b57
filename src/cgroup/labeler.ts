/**
 * Adds container/pod/systemd identity labels next to `cgroup` on every
 * metric that has one — plus container, pod and namespace names when runtime
 * lookups are on — and optionally folds cgroups into their container or pod.
 * Done once here, on raw families, so the Prometheus and OTLP outputs
 * (which both render the snapshot) see the same effective definitions.
 */
import type { Logger } from 'pino';
import { defineMetric, type MetricDef } from '../model/metric.js';
import type { RawFamily } from '../model/snapshot.js';
import { aggregatePath, identityOf, IDENTITY_LABELS, UNNAMED_CRI_RUNTIME, type Aggregation, type CgroupIdentity } from './identity.js';
import { NAME_LABELS, RuntimeNames, runtimeSources, type RuntimeSockets } from './runtime.js';

const MAX_CACHED = 100_000;

interface Resolved {
  path: string;
  /** Undefined for labels that are not paths: "~overflow", "~none", "unknown_cgroup_id:N". */
  id: CgroupIdentity | undefined;
}

export interface CgroupLabelerOptions {
  aggregate: Aggregation;
  /** false: no name lookups (and no name labels). */
  runtime_sockets: RuntimeSockets | false;
  runtime_timeout: number;
}

export class CgroupLabeler {
  private readonly defs = new Map<MetricDef, MetricDef>();
  private readonly cache = new Map<string, Resolved>();
  private readonly labels: readonly string[];

  constructor(private readonly how: Aggregation, private readonly names?: RuntimeNames) {
    this.labels = names ? [...IDENTITY_LABELS, ...NAME_LABELS] : IDENTITY_LABELS;
  }

  static fromConfig(config: CgroupLabelerOptions, log: Logger): CgroupLabeler {
    const names = config.runtime_sockets === false
      ? undefined
      : new RuntimeNames(runtimeSources(config.runtime_sockets), { timeoutMs: config.runtime_timeout, log });
    return new CgroupLabeler(config.aggregate, names);
  }

  /** The definition as exported: identity (and name) labels appended after the collector's own. */
  effective(def: MetricDef): MetricDef {
    if (!def.labels.includes('cgroup')) return def;
    let out = this.defs.get(def);
    if (!out) {
      out = defineMetric({ ...def, labels: [...def.labels, ...this.labels] });
      this.defs.set(def, out);
    }
    return out;
  }

  private resolve(cgroup: string): Resolved {
    let hit = this.cache.get(cgroup);
    if (!hit) {
      const isPath = cgroup.startsWith('/');
      const path = isPath ? aggregatePath(cgroup, this.how) : cgroup;
      hit = { path, id: isPath ? identityOf(path) : undefined };
      if (this.cache.size >= MAX_CACHED) this.cache.clear();
      this.cache.set(cgroup, hit);
    }
    return hit;
  }

  private values(id: CgroupIdentity | undefined): string[] {
    if (!id) return this.labels.map(() => '');
    const container = id.container_id ? this.names?.container(id.container_id) : undefined;
    const runtime = id.container_runtime === UNNAMED_CRI_RUNTIME && container ? container.runtime : id.container_runtime;
    const out: string[] = [id.container_id, runtime, id.pod_uid, id.pod_qos, id.systemd_unit];
    if (this.names) {
      const pod = this.names.pod(id.pod_uid || container?.podUid || '');
      out.push(container?.name ?? '', pod?.name ?? '', pod?.namespace ?? '');
    }
    return out;
  }

  async apply(families: RawFamily[]): Promise<RawFamily[]> {
    const at = families.map((fam) => fam.def.labels.indexOf('cgroup'));
    if (this.names) {
      // Names of new containers are looked up before this poll is labelled,
      // so a series does not start nameless and get renamed a poll later.
      const containers = new Set<string>();
      const pods = new Set<string>();
      families.forEach((fam, f) => {
        if (at[f]! < 0) return;
        for (const p of fam.points) {
          const { id } = this.resolve(p.labels[at[f]!]!);
          if (id?.container_id) containers.add(id.container_id);
          if (id?.pod_uid) pods.add(id.pod_uid);
        }
      });
      await this.names.learn(containers, pods);
    }
    return families.map((fam, f) => {
      if (at[f]! < 0) return fam;
      const def = this.effective(fam.def);
      const relabel = <P extends { labels: string[] }>(p: P): P => {
        const { path, id } = this.resolve(p.labels[at[f]!]!);
        const labels = [...p.labels];
        labels[at[f]!] = path;
        return { ...p, labels: [...labels, ...this.values(id)] };
      };
      return fam.kind === 'histogram'
        ? { def, kind: fam.kind, points: fam.points.map(relabel) }
        : { def, kind: fam.kind, points: fam.points.map(relabel) };
    });
  }

  close(): void {
    this.names?.close();
  }
}
