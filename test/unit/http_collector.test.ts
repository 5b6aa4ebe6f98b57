/** The http collector's userspace parts: /proc/net/tcp{,6} parsing, config defaults, metric names. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { http, httpMetrics, parseProcNetTcp } from '../../src/collectors/http.js';
import { formatAddress } from '../../src/collectors/tcp.js';
import { prometheusName } from '../../src/model/metric.js';
import { hookPresent, probeCollector } from '../../src/probe.js';
import type { NativeBinding } from '../../src/bpf/native.js';

const HEAD = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';

test('/proc/net/tcp: established sockets by inode, with ports and the peer as the kernel keeps it', () => {
  const text = HEAD
    + '   0: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1\n'
    + '   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 100 0 0 10 0\n';
  const got = parseProcNetTcp(text, false);
  assert.deepEqual([...got.keys()], [4242n], 'listeners are not connections');
  const s = got.get(4242n)!;
  assert.equal(s.localPort, 8080);
  assert.equal(s.peerPort, 54321);
  assert.equal(formatAddress(s.peer), '127.0.0.1');
});

test('/proc/net/tcp6: the address words in host order', () => {
  const text = `${HEAD}   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 77 1\n`;
  assert.equal(formatAddress(parseProcNetTcp(text, true).get(77n)!.peer), '::1');
});

test('off by default; OTel names translate to the semconv Prometheus names', () => {
  assert.equal(http.configSchema.parse({}).enabled, false);
  assert.equal(prometheusName(httpMetrics.server), 'kerntap_http_server_request_duration_seconds');
  assert.equal(prometheusName(httpMetrics.client), 'kerntap_http_client_request_duration_seconds');
  assert.deepEqual(httpMetrics.server.labels, ['cgroup', 'server.port', 'http.request.method', 'http.response.status_code']);
});

test('probe: a kernel without a syscall tracepoint turns the collector off, naming it', () => {
  const missing = { kind: 'tracepoint' as const, name: 'syscalls/sys_enter_kerntap_absent', since: '4.7, with CONFIG_FTRACE_SYSCALLS and tracefs mounted' };
  const native = {} as NativeBinding; // tracepoints are looked up in tracefs, not BTF
  assert.equal(hookPresent(native, missing), false);
  const probe = probeCollector({ ...http, hooks: [...http.hooks, missing] }, true, native, undefined);
  assert.equal(probe.enabled, false);
  assert.match(probe.reason, /^kernel lacks tracepoint\/syscalls\/sys_enter_kerntap_absent \(since 4\.7, with CONFIG_FTRACE_SYSCALLS and tracefs mounted\)$/);
  assert.equal(probeCollector(http, false, native, undefined).reason, 'disabled in config (collectors.http.enabled: false)');
});
