/**
 * OTLP settings: the config file's `otlp:` section first, then the standard
 * OTEL_* environment variables, then defaults. Every error is one line that
 * names the variable or key — and never echoes a header value, which may be
 * an API token.
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from '../config-error.js';

export type OtlpProtocol = 'http/protobuf' | 'http/json' | 'grpc';
const PROTOCOLS: readonly OtlpProtocol[] = ['http/protobuf', 'http/json', 'grpc'];
export type Temporality = 'cumulative' | 'delta';
export type HistogramForm = 'explicit' | 'exponential';

export interface OtlpFileConfig {
  endpoint?: string | undefined;
  protocol?: OtlpProtocol | undefined;
  headers?: Record<string, string> | undefined;
  timeout?: number | undefined;
  compression?: 'none' | 'gzip' | undefined;
  certificate?: string | undefined;
  client_key?: string | undefined;
  client_certificate?: string | undefined;
  interval?: number | undefined;
  temporality?: 'cumulative' | 'delta' | 'lowmemory' | undefined;
  histogram?: HistogramForm | undefined;
  resource_attributes?: Record<string, string> | undefined;
}

export interface OtlpSettings {
  /** HTTP: the full URL. gRPC: scheme, host and port (http: plaintext, https: TLS). */
  url: string;
  protocol: OtlpProtocol;
  headers: Record<string, string>;
  timeoutMs: number;
  compression: 'none' | 'gzip';
  tls: { ca?: Buffer; key?: Buffer; cert?: Buffer };
  intervalMs: number;
  temporality: Temporality;
  histogram: HistogramForm;
  /** What the user set: OTEL_RESOURCE_ATTRIBUTES, then OTEL_SERVICE_NAME, then the file; these override kerntap's own. */
  resourceAttributes: Record<string, string>;
}

type Env = Record<string, string | undefined>;

/** The metrics-specific variable if set, else the general one. */
function pick(env: Env, suffix: string): { name: string; value: string } | undefined {
  for (const name of [`OTEL_EXPORTER_OTLP_METRICS_${suffix}`, `OTEL_EXPORTER_OTLP_${suffix}`]) {
    const value = env[name]?.trim();
    if (value) return { name, value };
  }
  return undefined;
}

/**
 * "k1=v1,k2=v2" with percent-encoded values (W3C baggage style), the format
 * of both OTEL_EXPORTER_OTLP_HEADERS and OTEL_RESOURCE_ATTRIBUTES.
 */
export function parseKeyValues(text: string, source: string): Record<string, string> {
  const entries: Record<string, string> = {};
  for (const [i, part] of text.split(',').entries()) {
    if (part.trim() === '') continue;
    const eq = part.indexOf('=');
    const key = eq > 0 ? part.slice(0, eq).trim() : '';
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(key)) {
      throw new ConfigError(`${source}: malformed entry #${i + 1} (expected key=value, comma separated)`);
    }
    try {
      entries[key] = decodeURIComponent(part.slice(eq + 1).trim());
    } catch {
      throw new ConfigError(`${source}: ${key} has a malformed percent-encoding`);
    }
  }
  return entries;
}

function checkUrl(url: string, source: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ConfigError(`${source}: invalid URL`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new ConfigError(`${source}: URL scheme must be http or https, got ${parsed.protocol.replace(':', '')}`);
  }
  return url;
}

function positiveMs(value: string, source: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new ConfigError(`${source}: expected a positive number of milliseconds`);
  return n;
}

function readPem(path: string, source: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError(`${source}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/**
 * A warning when headers (Authorization, API tokens) would travel in clear
 * text: their names and the origin, never their values.
 */
export function plainHeadersWarning(settings: Pick<OtlpSettings, 'url' | 'headers'>): string | undefined {
  const names = Object.keys(settings.headers);
  const url = new URL(settings.url);
  if (names.length === 0 || url.protocol !== 'http:') return undefined;
  return `OTLP sends header${names.length > 1 ? 's' : ''} ${names.join(', ')} over plain http:// to ${url.host}: anyone on the path can read ${names.length > 1 ? 'them' : 'it'}; use an https:// endpoint`;
}

/** Returns undefined when no endpoint is configured anywhere: OTLP stays off. */
export function resolveOtlpSettings(file: OtlpFileConfig, env: Env = process.env): OtlpSettings | undefined {
  // The protocol first: an HTTP base endpoint gets /v1/metrics appended, a gRPC one is used as it is.
  const protocolVar = pick(env, 'PROTOCOL');
  const protocol = (file.protocol ?? protocolVar?.value ?? 'http/protobuf') as OtlpProtocol;
  if (!PROTOCOLS.includes(protocol)) {
    throw new ConfigError(`${protocolVar?.name ?? 'otlp.protocol'}: unsupported protocol ${JSON.stringify(protocol)} (use http/protobuf, http/json or grpc)`);
  }

  let endpoint: { name: string; url: string } | undefined;
  if (file.endpoint) endpoint = { name: 'config key otlp.endpoint', url: checkUrl(file.endpoint, 'config key otlp.endpoint') };
  else if (env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT?.trim()) {
    endpoint = { name: 'OTEL_EXPORTER_OTLP_METRICS_ENDPOINT', url: checkUrl(env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT.trim(), 'OTEL_EXPORTER_OTLP_METRICS_ENDPOINT') };
  } else if (env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim()) {
    const base = checkUrl(env.OTEL_EXPORTER_OTLP_ENDPOINT.trim(), 'OTEL_EXPORTER_OTLP_ENDPOINT');
    endpoint = { name: 'OTEL_EXPORTER_OTLP_ENDPOINT', url: protocol === 'grpc' ? base : `${base.replace(/\/+$/, '')}/v1/metrics` };
  }
  if (!endpoint) return undefined;
  const url = endpoint.url;
  if (protocol === 'grpc' && !['', '/'].includes(new URL(url).pathname)) {
    throw new ConfigError(`${endpoint.name}: a gRPC endpoint is scheme://host:port, without a path (got ${new URL(url).pathname})`);
  }

  const headers: Record<string, string> = {};
  const general = env.OTEL_EXPORTER_OTLP_HEADERS;
  const specific = env.OTEL_EXPORTER_OTLP_METRICS_HEADERS;
  if (general) Object.assign(headers, parseKeyValues(general, 'OTEL_EXPORTER_OTLP_HEADERS'));
  if (specific) Object.assign(headers, parseKeyValues(specific, 'OTEL_EXPORTER_OTLP_METRICS_HEADERS'));
  Object.assign(headers, file.headers ?? {});
  if (protocol === 'grpc') {
    for (const [key, value] of Object.entries(headers)) {
      // gRPC metadata: keys are case-insensitive tokens, and '-bin' keys would need binary values.
      if (!/^[0-9a-z_.-]+$/i.test(key) || key.toLowerCase().endsWith('-bin')) {
        throw new ConfigError(`OTLP header ${JSON.stringify(key)}: not a gRPC metadata key (letters, digits, '-', '_', '.'; no -bin suffix)`);
      }
      if (!/^[ -~]*$/.test(value)) throw new ConfigError(`OTLP header ${JSON.stringify(key)}: a gRPC metadata value must be printable ASCII`);
    }
  }

  const timeoutVar = pick(env, 'TIMEOUT');
  const timeoutMs = file.timeout ?? (timeoutVar ? positiveMs(timeoutVar.value, timeoutVar.name) : 10_000);

  const compressionVar = pick(env, 'COMPRESSION');
  const compression = file.compression ?? compressionVar?.value ?? 'none';
  if (compression !== 'none' && compression !== 'gzip') {
    throw new ConfigError(`${compressionVar?.name ?? 'otlp.compression'}: expected gzip or none`);
  }

  const tls: OtlpSettings['tls'] = {};
  const ca = file.certificate ? { name: 'config key otlp.certificate', value: file.certificate } : pick(env, 'CERTIFICATE');
  const key = file.client_key ? { name: 'config key otlp.client_key', value: file.client_key } : pick(env, 'CLIENT_KEY');
  const cert = file.client_certificate ? { name: 'config key otlp.client_certificate', value: file.client_certificate } : pick(env, 'CLIENT_CERTIFICATE');
  if (ca) tls.ca = readPem(ca.value, ca.name);
  if (key) tls.key = readPem(key.value, key.name);
  if (cert) tls.cert = readPem(cert.value, cert.name);
  if (Boolean(tls.key) !== Boolean(tls.cert)) {
    throw new ConfigError(`${key?.name ?? cert?.name}: mTLS needs both a client key and a client certificate`);
  }

  const intervalMs = file.interval ?? (env.OTEL_METRIC_EXPORT_INTERVAL ? positiveMs(env.OTEL_METRIC_EXPORT_INTERVAL, 'OTEL_METRIC_EXPORT_INTERVAL') : 60_000);

  const tempVar = env.OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE?.trim().toLowerCase();
  const pref = file.temporality ?? tempVar ?? 'cumulative';
  if (pref !== 'cumulative' && pref !== 'delta' && pref !== 'lowmemory') {
    throw new ConfigError(`OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: expected cumulative, delta or lowmemory`);
  }
  // kerntap exports monotonic counters, histograms and gauges only, so
  // "lowmemory" (delta for counters and histograms) is delta.
  const temporality: Temporality = pref === 'cumulative' ? 'cumulative' : 'delta';

  const histVar = env.OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION?.trim().toLowerCase();
  let histogram: HistogramForm = file.histogram ?? 'explicit';
  if (!file.histogram && histVar) {
    if (histVar === 'base2_exponential_bucket_histogram') histogram = 'exponential';
    else if (histVar !== 'explicit_bucket_histogram') {
      throw new ConfigError('OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION: expected explicit_bucket_histogram or base2_exponential_bucket_histogram');
    }
  }

  return {
    url,
    protocol,
    headers,
    timeoutMs,
    compression,
    tls,
    intervalMs,
    temporality,
    histogram,
    resourceAttributes: {
      ...(env.OTEL_RESOURCE_ATTRIBUTES ? parseKeyValues(env.OTEL_RESOURCE_ATTRIBUTES, 'OTEL_RESOURCE_ATTRIBUTES') : {}),
      ...(env.OTEL_SERVICE_NAME?.trim() ? { 'service.name': env.OTEL_SERVICE_NAME.trim() } : {}),
      ...file.resource_attributes,
    },
  };
}
