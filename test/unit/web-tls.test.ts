/**
 * client_auth_type as Go's crypto/tls defines it, over real TLS connections
 * to the real HTTP server: each of the five modes against a client without a
 * certificate, one with a certificate from the configured CA and one with a
 * certificate from another CA.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { pino } from 'pino';
import type { FastifyInstance } from 'fastify';
import { buildServer } from '../../src/server.js';
import { loadWebConfig, type ClientAuthType } from '../../src/webconfig.js';
import type { Poller } from '../../src/poller.js';
import { makeCerts, type Certs } from '../helpers/certs.js';

/** A poller that has one empty snapshot: the server needs nothing else. */
export const idlePoller = { latest: { seq: 0, timeMs: 0, families: [] }, healthy: true, consecutiveFailures: 0, lastError: undefined } as unknown as Poller;

let certs: Certs;
let foreign: Certs;
before(() => {
  certs = makeCerts();
  foreign = makeCerts();
});

type Outcome = 'served' | 'refused';

function get(url: string, client?: { cert: string; key: string }): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = https.get(url, {
      agent: false,
      ca: readFileSync(certs.ca),
      ...(client ? { cert: readFileSync(client.cert), key: readFileSync(client.key) } : {}),
    }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200 ? 'served' : 'refused'));
    });
    req.on('error', () => resolve('refused'));
    req.setTimeout(5000, () => req.destroy());
  });
}

const EXPECTED: Record<ClientAuthType, [none: Outcome, good: Outcome, foreign: Outcome]> = {
  NoClientCert: ['served', 'served', 'served'],
  RequestClientCert: ['served', 'served', 'served'],
  RequireAnyClientCert: ['refused', 'served', 'served'],
  VerifyClientCertIfGiven: ['served', 'served', 'refused'],
  RequireAndVerifyClientCert: ['refused', 'served', 'refused'],
};

const servers: FastifyInstance[] = [];
after(async () => {
  for (const s of servers) await s.close();
});

for (const [mode, expected] of Object.entries(EXPECTED) as [ClientAuthType, [Outcome, Outcome, Outcome]][]) {
  for (const tls of ['TLS12', 'TLS13']) {
    test(`client_auth_type ${mode} (${tls}): no certificate ${expected[0]}, a good one ${expected[1]}, a foreign one ${expected[2]}`, async () => {
      const file = path.join(certs.dir, `web-${mode}-${tls}.yml`);
      writeFileSync(file, `tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: ${mode}\n  client_ca_file: ca.crt\n  min_version: ${tls}\n  max_version: ${tls}\n`);
      const server = buildServer({ poller: idlePoller, telemetryPath: '/metrics', probes: [], version: 't', log: pino({ level: 'silent' }), web: loadWebConfig(file) });
      servers.push(server);
      const url = `${await server.listen({ host: '127.0.0.1', port: 0 })}/metrics`;
      const got = [
        await get(url),
        await get(url, { cert: certs.clientCert, key: certs.clientKey }),
        await get(url, { cert: foreign.clientCert, key: foreign.clientKey }),
      ];
      assert.deepEqual(got, expected);
    });
  }
}
