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
import { createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { Worker } from 'node:worker_threads';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError } from './config-error.js';
import type { CompareReply, CompareRequest } from './bcrypt-worker.js';

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

/** At most this many bcrypt checks wait or run at once; more are answered "busy" at once. */
export const MAX_PENDING_CHECKS = 4;
/** Successful checks remembered (so a scraper costs one bcrypt per credential, not per scrape). */
const VERIFIED_CACHE_SIZE = 256;

export type AuthResult = 'ok' | 'denied' | 'busy';

/**
 * Checks an Authorization header against the bcrypt users.
 *  - bcrypt runs in a worker thread, never on the event loop that serves
 *    scrapes and runs polls, and at most MAX_PENDING_CHECKS are pending.
 *  - An unknown user is compared against a dummy hash of the same cost, so
 *    the answer takes as long as for a known user with a wrong password.
 *  - A successful check is remembered under an HMAC of user and password
 *    with a key that lives only in this process: the cache holds no
 *    password, nor anything an offline guess could be checked against.
 */
export class BasicAuth {
  private readonly cacheKey = randomBytes(32);
  /** Insertion order is age: the oldest entry goes first when full. */
  private readonly verified = new Set<string>();
  private readonly dummyHash: string;
  private pending = 0;
  private worker: Worker | undefined;
  private nextId = 0;
  private readonly waiting = new Map<number, { resolve: (ok: boolean) => void; reject: (err: Error) => void }>();

  constructor(private readonly users: Map<string, string>) {
    const cost = Math.max(...[...users.values()].map((h) => Number(/^\$2[abxy]?\$(\d\d)\$/.exec(h)?.[1] ?? 10)));
    // A well-formed 60-character hash (bcryptjs answers anything else at
    // once): a real salt of that cost, and a digest no password produces.
    // bcryptjs is loaded here, only when basic auth is on (~0.7 MB of heap otherwise unused).
    const bcrypt = createRequire(import.meta.url)('bcryptjs') as typeof import('bcryptjs');
    this.dummyHash = `${bcrypt.genSaltSync(cost)}${'.'.repeat(31)}`;
  }

  async check(header: string | undefined): Promise<AuthResult> {
    if (!header?.startsWith('Basic ')) return 'denied';
    const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return 'denied';
    const user = decoded.slice(0, colon);
    const password = decoded.slice(colon + 1);
    const key = createHmac('sha256', this.cacheKey).update(user).update('\u0000').update(password).digest('base64');
    if (this.verified.has(key)) return 'ok';
    if (this.pending >= MAX_PENDING_CHECKS) return 'busy';
    const hash = this.users.get(user);
    this.pending++;
    let ok: boolean;
    try {
      ok = await this.compare(password, hash ?? this.dummyHash);
    } finally {
      this.pending--;
    }
    if (!ok || hash === undefined) return 'denied';
    if (this.verified.size >= VERIFIED_CACHE_SIZE) this.verified.delete(this.verified.values().next().value!);
    this.verified.add(key);
    return 'ok';
  }

  close(): void {
    void this.worker?.terminate();
    this.worker = undefined;
  }

  private compare(password: string, hash: string): Promise<boolean> {
    const worker = this.startWorker();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      worker.postMessage({ id, password, hash } satisfies CompareRequest);
    });
  }

  private startWorker(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(new URL('./bcrypt-worker.js', import.meta.url));
    // Idle, it must not keep the process alive.
    worker.unref();
    worker.on('message', ({ id, ok }: CompareReply) => {
      this.waiting.get(id)?.resolve(ok);
      this.waiting.delete(id);
    });
    const fail = (err: Error) => {
      if (this.worker === worker) this.worker = undefined;
      for (const w of this.waiting.values()) w.reject(new Error(`bcrypt worker failed: ${err.message}`));
      this.waiting.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`exited with ${code}`)));
    this.worker = worker;
    return worker;
  }
}
