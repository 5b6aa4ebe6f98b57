/**
 * --web.config.file: TLS and basic auth for the HTTP endpoints, in the
 * exporter-toolkit format Prometheus users know:
 *
 *   tls_server_config:
 *     cert_file: server.crt
 *     key_file: server.key
 *     client_auth_type: RequireAndVerifyClientCert   # optional mTLS
 *     client_ca_file: ca.crt
 *     min_version: TLS12
 *   basic_auth_users:
 *     alice: $2y$10$...                               # bcrypt hash
 *
 * Relative paths are relative to the file. Passwords are never logged.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import bcrypt from 'bcryptjs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError } from './config-error.js';

const CLIENT_AUTH = ['NoClientCert', 'RequestClientCert', 'RequireAnyClientCert', 'VerifyClientCertIfGiven', 'RequireAndVerifyClientCert'] as const;
const TLS_VERSIONS = { TLS10: 'TLSv1', TLS11: 'TLSv1.1', TLS12: 'TLSv1.2', TLS13: 'TLSv1.3' } as const;

const schema = z.strictObject({
  tls_server_config: z
    .strictObject({
      cert_file: z.string().min(1),
      key_file: z.string().min(1),
      client_auth_type: z.enum(CLIENT_AUTH).default('NoClientCert'),
      client_ca_file: z.string().optional(),
      min_version: z.enum(['TLS10', 'TLS11', 'TLS12', 'TLS13']).default('TLS12'),
      max_version: z.enum(['TLS10', 'TLS11', 'TLS12', 'TLS13']).optional(),
    })
    .optional(),
  basic_auth_users: z
    .record(z.string().regex(/^[^:]+$/, 'user names cannot contain ":"'), z.string().regex(/^\$2[abxy]?\$\d\d\$.{53}$/, 'must be a bcrypt hash'))
    .optional(),
  http_server_config: z.strictObject({ headers: z.record(z.string(), z.string()).optional() }).optional(),
});

export type ClientAuthType = (typeof CLIENT_AUTH)[number];

export interface WebConfig {
  https?: {
    cert: Buffer;
    key: Buffer;
    ca?: Buffer;
    requestCert: boolean;
    rejectUnauthorized: boolean;
    minVersion: (typeof TLS_VERSIONS)[keyof typeof TLS_VERSIONS];
    maxVersion?: (typeof TLS_VERSIONS)[keyof typeof TLS_VERSIONS];
  };
  /** Checked on each TLS connection after the handshake (clientCertProblem). */
  clientAuth?: ClientAuthType;
  users?: Map<string, string>;
  headers: Record<string, string>;
}

export function loadWebConfig(file: string): WebConfig {
  const where = `web config file ${file}`;
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(file, 'utf8')) ?? {};
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new ConfigError(`${where}: ${e.code ? `cannot read (${e.code})` : `invalid YAML: ${e.message.split('\n')[0]}`}`);
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const key = issue.path.map(String).join('.');
    if (issue.code === 'unrecognized_keys') throw new ConfigError(`${where}: unknown key ${issue.keys.join(', ')}`);
    throw new ConfigError(`${where}: key ${key || '(top level)'}: ${issue.message}`);
  }
  const c = parsed.data;
  const dir = path.dirname(file);
  const read = (key: string, p: string) => {
    try {
      return readFileSync(path.resolve(dir, p));
    } catch (err) {
      throw new ConfigError(`${where}: key ${key}: cannot read ${p} (${(err as NodeJS.ErrnoException).code})`);
    }
  };
  const out: WebConfig = { headers: c.http_server_config?.headers ?? {} };
  const tls = c.tls_server_config;
  if (tls) {
    const verify = tls.client_auth_type === 'RequireAndVerifyClientCert' || tls.client_auth_type === 'VerifyClientCertIfGiven';
    if (verify && !tls.client_ca_file) {
      throw new ConfigError(`${where}: key tls_server_config.client_ca_file: needed for client_auth_type ${tls.client_auth_type}`);
    }
    out.https = {
      cert: read('tls_server_config.cert_file', tls.cert_file),
      key: read('tls_server_config.key_file', tls.key_file),
      ...(tls.client_ca_file ? { ca: read('tls_server_config.client_ca_file', tls.client_ca_file) } : {}),
      requestCert: tls.client_auth_type !== 'NoClientCert',
      // Only this mode lets the handshake itself reject; the others are
      // checked on the finished handshake, where "no certificate" and "a
      // certificate that does not verify" can be told apart.
      rejectUnauthorized: tls.client_auth_type === 'RequireAndVerifyClientCert',
      minVersion: TLS_VERSIONS[tls.min_version],
      ...(tls.max_version ? { maxVersion: TLS_VERSIONS[tls.max_version] } : {}),
    };
    out.clientAuth = tls.client_auth_type;
  }
  if (c.basic_auth_users && Object.keys(c.basic_auth_users).length > 0) out.users = new Map(Object.entries(c.basic_auth_users));
  return out;
}

/**
 * Why a finished TLS handshake must not serve, under client_auth_type as Go's
 * crypto/tls (and so exporter-toolkit) defines it, or undefined:
 *  - NoClientCert, RequestClientCert: any client, certificate or not, valid or not;
 *  - RequireAnyClientCert: a certificate is required, but not verified;
 *  - VerifyClientCertIfGiven: no certificate is fine, a given one must verify;
 *  - RequireAndVerifyClientCert: a certificate that verifies (the handshake enforces it).
 */
export function clientCertProblem(mode: ClientAuthType, socket: TLSSocket): string | undefined {
  const given = Object.keys(socket.getPeerCertificate()).length > 0;
  switch (mode) {
    case 'NoClientCert':
    case 'RequestClientCert':
      return undefined;
    case 'RequireAnyClientCert':
      return given ? undefined : 'no client certificate';
    case 'VerifyClientCertIfGiven':
    case 'RequireAndVerifyClientCert':
      if (!given) return mode === 'VerifyClientCertIfGiven' ? undefined : 'no client certificate';
      return socket.authorized ? undefined : `client certificate not verified: ${String(socket.authorizationError)}`;
  }
}

/**
 * Checks an Authorization header against the bcrypt users. bcrypt is slow on
 * purpose, so a successful check is remembered (by a SHA-256 of the
 * credentials, never the password itself) and repeated scrapes are cheap.
 */
export class BasicAuth {
  private readonly verified = new Set<string>();

  constructor(private readonly users: Map<string, string>) {}

  async check(header: string | undefined): Promise<boolean> {
    if (!header?.startsWith('Basic ')) return false;
    const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return false;
    const user = decoded.slice(0, colon);
    const password = decoded.slice(colon + 1);
    const hash = this.users.get(user);
    const digest = createHash('sha256').update(`${user}\u0000${password}\u0000${hash ?? ''}`).digest('hex');
    for (const known of this.verified) {
      if (timingSafeEqual(Buffer.from(known), Buffer.from(digest))) return true;
    }
    // Unknown users still pay for a bcrypt comparison, so timing does not reveal them.
    const ok = await bcrypt.compare(password, hash ?? '$2b$10$invalidinvalidinvalidinvalidinvalidinvalidinvalidinv');
    if (ok && hash) {
      if (this.verified.size > 1000) this.verified.clear();
      this.verified.add(digest);
    }
    return ok && hash !== undefined;
  }
}
