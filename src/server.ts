/**
 * HTTP: /metrics (Prometheus text, OpenMetrics or protobuf by Accept), / (landing
 * page), /healthz. Scrapes are served from the poller's latest snapshot.
 */
import type { TLSSocket } from 'node:tls';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { CONTENT_TYPES, ExpositionCache, negotiateFormat } from './exporters/scrape-format.js';
import type { Poller } from './poller.js';
import type { CollectorProbe } from './probe.js';
import { BasicAuth, clientCertProblem, type WebConfig } from './webconfig.js';

export interface ServerOptions {
  poller: Poller;
  telemetryPath: string;
  probes: CollectorProbe[];
  version: string;
  log: Logger;
  web?: WebConfig;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** ":10435" → host "::"/port 10435; "127.0.0.1:0"; "[::1]:9000". */
export function parseListenAddress(addr: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(addr);
  if (!m) throw new Error(`--web.listen-address ${JSON.stringify(addr)}: expected [host]:port, e.g. :10435 or 127.0.0.1:10435`);
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`--web.listen-address ${JSON.stringify(addr)}: port ${port} out of range`);
  const host = m[1] ?? (m[2] === '' ? '::' : m[2]!);
  return { host, port };
}

/**
 * No route has a schema, so fastify needs no schema compilers; without these
 * it loads its defaults (ajv and fast-json-stringify) at start: ~1.4 MB of
 * heap and ~3 MB of RSS never used.
 */
const noSchema = () => () => {
  throw new Error('kerntap routes take no schema (server.ts noSchemaCompilers)');
};
const noSchemaCompilers = { compilersFactory: { buildValidator: noSchema, buildSerializer: noSchema } };

export function buildServer(opts: ServerOptions): FastifyInstance {
  const app = Fastify({
    logger: false,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    schemaController: noSchemaCompilers,
    ...(opts.web?.https ? { https: opts.web.https } : {}),
  });
  const cache = new ExpositionCache();
  const clientAuth = opts.web?.clientAuth;
  if (clientAuth) {
    // Runs after the HTTP server's own listener, before any request is read:
    // a client that client_auth_type refuses never gets an answer, as in Go.
    app.server.on('secureConnection', (socket: TLSSocket) => {
      const problem = clientCertProblem(clientAuth, socket);
      if (!problem) return;
      opts.log.debug({ remote: socket.remoteAddress, client_auth_type: clientAuth }, `TLS client refused: ${problem}`);
      socket.destroy();
    });
  }

  const headers = opts.web?.headers ?? {};
  const auth = opts.web?.users ? new BasicAuth(opts.web.users) : undefined;
  app.addHook('onRequest', async (req, reply) => {
    for (const [k, v] of Object.entries(headers)) reply.header(k, v);
    if (!auth) return;
    const result = await auth.check(req.headers.authorization);
    if (result === 'busy') return reply.code(429).header('retry-after', '1').send('Too many credential checks at once\n');
    if (result === 'denied') return reply.code(401).header('www-authenticate', 'Basic realm="kerntap"').send('Unauthorized\n');
  });
  if (auth) app.addHook('onClose', async () => auth.close());

  app.get(opts.telemetryPath, async (req, reply) => {
    const format = negotiateFormat(req.headers.accept);
    const body = await cache.get(opts.poller.latest, format);
    reply.header('content-type', CONTENT_TYPES[format]).header('cache-control', 'no-store');
    return body;
  });

  app.get('/healthz', async (_req, reply) => {
    const healthy = opts.poller.healthy;
    reply.code(healthy ? 200 : 503).header('content-type', 'text/plain; charset=utf-8');
    return healthy ? 'ok\n' : `degraded: ${opts.poller.consecutiveFailures} polls in a row failed (last: ${opts.poller.lastError ?? 'unknown'})\n`;
  });

  if (opts.telemetryPath !== '/') {
    app.get('/', async (_req, reply) => {
      const rows = opts.probes
        .map((p) => `<tr><td>${escapeHtml(p.collector)}</td><td>${p.enabled ? 'on' : 'off'}</td><td>${escapeHtml(p.reason)}</td></tr>`)
        .join('');
      reply.header('content-type', 'text/html; charset=utf-8');
      return `<!doctype html><html><head><meta charset="utf-8"><title>kerntap</title></head><body>
<h1>kerntap ${escapeHtml(opts.version)}</h1>
<p>eBPF metrics exporter. <a href="${escapeHtml(opts.telemetryPath)}">Metrics</a> · <a href="/healthz">Health</a></p>
<table border="1" cellpadding="4"><tr><th>collector</th><th>state</th><th>reason</th></tr>${rows}</table>
</body></html>\n`;
    });
  }
  return app;
}
