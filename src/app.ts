/**
 * Wiring: probe → start collectors → poller → HTTP. Also the orderly stop:
 * HTTP closes (new requests get 503, in-flight ones finish), the poller
 * stops, and every BPF link and object is closed.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { loadNative, packageRoot, type NativeBinding } from './bpf/native.js';
import { CgroupResolver } from './cgroup/resolver.js';
import { CgroupLabeler } from './cgroup/labeler.js';
import { detectCgroup2Root } from './cgroup/mount.js';
import { collectorDefinitions } from './collectors/index.js';
import type { CollectorContext } from './collectors/types.js';
import type { Config } from './config.js';
import { Poller, type RunningCollector } from './poller.js';
import {
  btfProblem,
  effectiveCapabilities,
  formatProbeTable,
  privilegeProblem,
  probeCollector,
  explainLoadFailure,
  type CollectorProbe,
} from './probe.js';
import { buildServer, parseListenAddress } from './server.js';
import type { OtlpPipeline } from './exporters/otlp.js';
import { resolveOtlpSettings } from './exporters/otlp-settings.js';
import type { WebConfig } from './webconfig.js';
import { dropPrivileges, kernelAtLeast } from './privileges.js';
import { VERSION } from './version.js';

export class StartupError extends Error {
  override name = 'StartupError';
}

export interface ProbeResult {
  native: NativeBinding | undefined;
  globalProblem: string | undefined;
  rows: CollectorProbe[];
}

export function probeAll(config: Config): ProbeResult {
  let native: NativeBinding | undefined;
  let globalProblem: string | undefined;
  try {
    native = loadNative();
  } catch (err) {
    globalProblem = (err as Error).message;
  }
  globalProblem ??= btfProblem() ?? privilegeProblem(effectiveCapabilities());
  const rows = collectorDefinitions.map((def) =>
    probeCollector(def, (config.collectors as Record<string, { enabled: boolean }>)[def.name]?.enabled ?? false, native, globalProblem),
  );
  return { native, globalProblem, rows };
}

/**
 * Loads and attaches every collector the probe left on; one that fails is
 * turned off with the reason (the helper, hook or field the kernel lacks,
 * from the verifier and libbpf), and the others go on.
 */
async function startCollectors(probe: ProbeResult, ctx: CollectorContext, config: Config): Promise<RunningCollector[]> {
  const running: RunningCollector[] = [];
  for (const def of collectorDefinitions) {
    const row = probe.rows.find((r) => r.collector === def.name)!;
    if (!row.enabled) continue;
    try {
      const instance = await def.start(ctx, (config.collectors as Record<string, never>)[def.name]);
      row.notes = [...(instance.notes ?? [])];
      running.push({ name: def.name, instance });
    } catch (err) {
      row.enabled = false;
      row.reason = explainLoadFailure(err);
    }
  }
  return running;
}

function collectorContext(native: NativeBinding, config: Config, log: Logger): { ctx: CollectorContext; cgroups: CgroupResolver } {
  let cgroupRoot: string;
  try {
    cgroupRoot = detectCgroup2Root(config.cgroup.root);
  } catch (err) {
    throw new StartupError((err as Error).message);
  }
  const cgroups = new CgroupResolver({ root: cgroupRoot, ttlMs: config.cgroup.ttl });
  const ctx: CollectorContext = {
    native,
    cgroups,
    log,
    objectPath: (name) => path.join(objectDir(), `${name}.bpf.o`),
    pollIntervalMs: config.poll.interval,
  };
  return { ctx, cgroups };
}

/**
 * --check: the probe, then a real trial of every collector it left on
 * (load, verify, attach, detach), so that what the kernel's verifier
 * refuses shows here and not only at start.
 */
export async function checkAll(config: Config, log: Logger): Promise<ProbeResult> {
  const probe = probeAll(config);
  if (probe.globalProblem || !probe.native) return probe;
  const { ctx } = collectorContext(probe.native, config, log);
  for (const c of await startCollectors(probe, ctx, config)) c.instance.close();
  return probe;
}

export function objectDir(): string {
  return process.env.KERNTAP_BPF_DIR ?? path.join(packageRoot(), 'bpf', 'out');
}

export class Kerntap {
  private statsFd: number | undefined;
  private closed = false;
  server: FastifyInstance | undefined;
  poller: Poller | undefined;
  otlp: OtlpPipeline | undefined;
  labeler: CgroupLabeler | undefined;
  address: string | undefined;

  private constructor(
    readonly config: Config,
    readonly log: Logger,
    readonly probes: CollectorProbe[],
    private readonly native: NativeBinding,
    readonly collectors: RunningCollector[],
  ) {}

  static async start(config: Config, log: Logger, overrides: { listenAddress?: string; web?: WebConfig } = {}): Promise<Kerntap> {
    const listen = parseListenAddress(overrides.listenAddress ?? config.web.listen_address);
    // Resolved before anything is loaded, so a bad endpoint or header fails fast.
    const otlpSettings = resolveOtlpSettings(config.otlp);
    const probe = probeAll(config);
    if (probe.globalProblem || !probe.native) throw new StartupError(probe.globalProblem ?? 'native addon unavailable');
    const native = probe.native;

    const { ctx, cgroups } = collectorContext(native, config, log);
    cgroups.walk();
    const running = await startCollectors(probe, ctx, config);
    // Probing and loading are done: their parsed kernel BTF need not stay resident.
    native.releaseKernelBtf();
    native.trimMemory();
    const app = new Kerntap(config, log, probe.rows, native, running);
    try {
      for (const row of probe.rows) {
        if (row.enabled) log.info({ collector: row.collector, ...(row.notes?.length ? { notes: row.notes } : {}) }, 'collector on');
        else log.warn({ collector: row.collector, reason: row.reason }, 'collector off');
      }
      process.stderr.write(`${formatProbeTable(probe.rows)}\n`);
      if (running.length === 0) {
        throw new StartupError('no collector could start; see the table above (or run with --check)');
      }
      if (config.bpf.stats) app.statsFd = native.enableStats();
      app.labeler = CgroupLabeler.fromConfig(config.cgroup, log);

      const poller = new Poller(running, {
        intervalMs: config.poll.interval,
        maxSeriesPerMetric: config.limits.max_series_per_metric,
        maxLabelLength: config.limits.max_label_length,
        degradedAfterFailures: config.poll.degraded_after_failures,
        version: VERSION,
        libbpfVersion: native.libbpfVersion(),
        statsEnabled: () => app.statsFd !== undefined || bpfStatsSysctl(),
        mapMemory: { reportsUsage: kernelAtLeast(6, 4), possibleCpus: native.numPossibleCpus() },
        log,
        collectorStates: probe.rows.map((r) => ({ name: r.collector, enabled: r.enabled })),
        // New cgroups are found by a walk as soon as an unknown id shows up;
        // this check (a stat per known path) notices deletions, often enough
        // that a deleted cgroup's series goes within 1.1 × cgroup.ttl.
        beforePoll: () => cgroups.refresh(Math.max(config.poll.interval, Math.min(config.cgroup.ttl / 10, 60_000))),
        labeler: app.labeler,
      });
      app.poller = poller;
      // Each poll's map buffers are freed by then: give the pages back.
      poller.on('snapshot', () => native.trimMemory());
      await poller.start();
      if (otlpSettings) {
        // Loaded only when used: the OTel SDK and exporters cost ~15 MB of heap.
        const { startOtlp } = await import('./exporters/otlp.js');
        const otlp = await startOtlp(otlpSettings, () => poller.latest, VERSION, log);
        app.otlp = otlp;
        poller.addSource(() => otlp.families());
      }

      const server = buildServer({ poller, telemetryPath: config.web.telemetry_path, probes: probe.rows, version: VERSION, log, ...(overrides.web ? { web: overrides.web } : {}) });
      app.server = server;
      try {
        app.address = await server.listen({ host: listen.host, port: listen.port });
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        const what = e.code === 'EADDRINUSE' ? 'address already in use' : e.code === 'EACCES' ? 'permission denied' : e.message;
        throw new StartupError(`cannot listen on ${overrides.listenAddress ?? config.web.listen_address}: ${what}`);
      }
      if (config.security.drop_privileges) {
        const drop = dropPrivileges(config.security.run_as_uid, config.security.run_as_gid, log);
        if (!drop.dropped) log.info(drop.reason);
      }
      log.info({ address: app.address, path: config.web.telemetry_path, tls: Boolean(overrides.web?.https), basic_auth: Boolean(overrides.web?.users), collectors: running.map((r) => r.name) }, 'kerntap listening');
      return app;
    } catch (err) {
      await app.close();
      throw err;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.poller?.stop();
    this.labeler?.close();
    if (this.server) await this.server.close().catch(() => undefined);
    // Last OTLP export of the latest snapshot, bounded so shutdown stays prompt.
    await this.otlp?.shutdown(3000);
    for (const c of this.collectors) {
      try {
        c.instance.close();
      } catch (err) {
        this.log.warn({ collector: c.name }, `close failed: ${(err as Error).message}`);
      }
    }
    if (this.statsFd !== undefined) this.native.closeFd(this.statsFd);
    this.statsFd = undefined;
  }
}

function bpfStatsSysctl(): boolean {
  try {
    return readFileSync('/proc/sys/kernel/bpf_stats_enabled', 'utf8').trim() === '1';
  } catch {
    return false;
  }
}
