/**
 * Configuration: a YAML file validated against a schema, then command-line
 * flags on top. Every error names the file and the key.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { z } from 'zod';
import { ConfigError } from './config-error.js';
import { durationSchema } from './duration.js';
import { collectorDefinitions } from './collectors/index.js';

export const DEFAULT_LISTEN_ADDRESS = ':10435';
export const DEFAULT_TELEMETRY_PATH = '/metrics';
export const DEFAULT_RUNTIME_SOCKETS = {
  docker: '/run/docker.sock',
  podman: '/run/podman/podman.sock',
  containerd: '/run/containerd/containerd.sock',
  crio: '/run/crio/crio.sock',
};
const socketPathSchema = z.string().regex(/^(\/.*)?$/, 'must be an absolute path to a unix socket, or "" to turn it off');

function collectorsSchema() {
  const shape: Record<string, z.ZodType> = {};
  for (const def of collectorDefinitions) {
    shape[def.name] = def.configSchema.default(def.configSchema.parse({}));
  }
  return z.strictObject(shape);
}

export function configSchema() {
  const collectors = collectorsSchema();
  return z.strictObject({
    poll: z
      .strictObject({
        /** How often the kernel maps are read into a new snapshot. */
        interval: durationSchema(100).default(5000),
        /** /healthz reports degraded after this many polls in a row failed. */
        degraded_after_failures: z.number().int().min(1).max(1000).default(3),
      })
      .default({ interval: 5000, degraded_after_failures: 3 }),
    web: z
      .strictObject({
        listen_address: z.string().min(1).default(DEFAULT_LISTEN_ADDRESS),
        telemetry_path: z
          .string()
          .regex(/^\/[A-Za-z0-9._~\-/]*$/, 'must be an absolute URL path such as /metrics')
          .default(DEFAULT_TELEMETRY_PATH),
      })
      .default({ listen_address: DEFAULT_LISTEN_ADDRESS, telemetry_path: DEFAULT_TELEMETRY_PATH }),
    cgroup: z
      .strictObject({
        /** cgroup v2 mount point; 'auto' finds it in /proc/self/mountinfo. */
        root: z.string().default('auto'),
        /** Series of a deleted cgroup are kept this long, then dropped (and its kernel entries freed). */
        ttl: durationSchema(0).default(600_000),
        /** Report per cgroup, or fold cgroups into their container or pod to cut cardinality. */
        aggregate: z.enum(['cgroup', 'container', 'pod']).default('cgroup'),
        /** Container/pod/namespace names from the runtimes' APIs (docs/containers.md); '' turns one off, false all. */
        runtime_sockets: z
          .union([z.literal(false), z.strictObject({
            docker: socketPathSchema.default(DEFAULT_RUNTIME_SOCKETS.docker),
            podman: socketPathSchema.default(DEFAULT_RUNTIME_SOCKETS.podman),
            containerd: socketPathSchema.default(DEFAULT_RUNTIME_SOCKETS.containerd),
            crio: socketPathSchema.default(DEFAULT_RUNTIME_SOCKETS.crio),
          })], { error: 'must be false, or a mapping of docker, podman, containerd, crio to socket paths' })
          .default(DEFAULT_RUNTIME_SOCKETS),
        /** Longest wait for a runtime's answer; a poll that meets new containers waits at most this long. */
        runtime_timeout: durationSchema(10).default(1000),
      })
      .default({ root: 'auto', ttl: 600_000, aggregate: 'cgroup', runtime_sockets: DEFAULT_RUNTIME_SOCKETS, runtime_timeout: 1000 }),
    limits: z
      .strictObject({
        /** Series per metric; more are folded into one series labelled "~overflow". */
        max_series_per_metric: z.number().int().min(1).max(1_000_000).default(10_000),
        /** Label values longer than this (bytes of UTF-8) are cut, with a "…" mark. */
        max_label_length: z.number().int().min(16).max(65_536).default(512),
      })
      .default({ max_series_per_metric: 10_000, max_label_length: 512 }),
    security: z
      .strictObject({
        /** After everything is loaded, attached and listening, a root kerntap switches to this uid/gid, dropping every capability. */
        drop_privileges: z.boolean().default(true),
        run_as_uid: z.number().int().min(1).max(4_294_967_294).default(65534),
        // 0 is allowed: a group grants no capability, and containerd's socket is root:root 0660.
        run_as_gid: z.number().int().min(0).max(4_294_967_294).default(65534),
      })
      .default({ drop_privileges: true, run_as_uid: 65534, run_as_gid: 65534 }),
    bpf: z
      .strictObject({
        /** Turn on kernel BPF run-time stats (BPF_ENABLE_STATS) for the program self-metrics. Costs ~20ns per event. */
        stats: z.boolean().default(false),
      })
      .default({ stats: false }),
    collectors: collectors.default(collectors.parse({})),
    /** OTLP push; see docs/otlp.md. The OTEL_* environment variables fill in what is not set here. */
    otlp: z
      .strictObject({
        endpoint: z.string().optional(),
        protocol: z.enum(['http/protobuf', 'http/json', 'grpc']).optional(),
        headers: z.record(z.string(), z.string()).optional(),
        timeout: durationSchema(1).optional(),
        compression: z.enum(['none', 'gzip']).optional(),
        certificate: z.string().optional(),
        client_key: z.string().optional(),
        client_certificate: z.string().optional(),
        interval: durationSchema(1000).optional(),
        temporality: z.enum(['cumulative', 'delta', 'lowmemory']).optional(),
        histogram: z.enum(['explicit', 'exponential']).optional(),
        resource_attributes: z.record(z.string(), z.string()).optional(),
      })
      .default({}),
  });
}

export type Config = z.output<ReturnType<typeof configSchema>>;

export { ConfigError };

function describeIssue(source: string, issue: z.core.$ZodIssue): string {
  const key = issue.path.map(String).join('.') || '(top level)';
  if (issue.code === 'unrecognized_keys') {
    const prefix = issue.path.length ? `${issue.path.map(String).join('.')}.` : '';
    return `${source}: unknown key ${issue.keys.map((k) => prefix + k).join(', ')}`;
  }
  return `${source}: key ${key}: ${issue.message}`;
}

/** Parses and validates configuration text; throws ConfigError with one line naming file and key. */
export function parseConfig(text: string, source = 'config'): Config {
  let raw: unknown;
  try {
    raw = text.trim() === '' ? {} : parseYaml(text, { uniqueKeys: true, merge: false });
  } catch (err) {
    const e = err as YAMLParseError;
    const where = e.linePos?.[0] ? ` at line ${e.linePos[0].line} column ${e.linePos[0].col}` : '';
    throw new ConfigError(`${source}: invalid YAML${where}: ${e.message.split('\n')[0]}`);
  }
  if (raw === null || raw === undefined) raw = {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(`${source}: expected a mapping at the top level`);
  }
  const result = configSchema().safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new ConfigError(describeIssue(source, issue));
  }
  return result.data;
}

export function loadConfigFile(file: string | undefined): Config {
  if (!file) return parseConfig('', 'built-in defaults');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new ConfigError(`config file ${file}: cannot read (${e.code ?? e.message})`);
  }
  return parseConfig(text, `config file ${file}`);
}
