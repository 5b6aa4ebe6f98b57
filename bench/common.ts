/** What bench.ts and soak.ts both need: an nginx site on loopback, and a process's CPU and memory from /proc. */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/**
 * Writes an nginx config serving a 512-byte page on 127.0.0.1:port from a
 * fresh temporary directory; returns the config's path (for `nginx -c`).
 * With accessLog, requests are logged to access.log next to it.
 */
export function writeNginxSite(port: number, opts: { workers: number | 'auto'; keepaliveRequests?: number; accessLog?: boolean }): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'kt-bench-nginx-'));
  writeFileSync(path.join(dir, 'index.html'), 'x'.repeat(512));
  const keepalive = opts.keepaliveRequests ? ` keepalive_requests ${opts.keepaliveRequests};` : '';
  const conf = path.join(dir, 'nginx.conf');
  writeFileSync(conf, `worker_processes ${opts.workers}; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events { worker_connections 4096; }
http { access_log ${opts.accessLog ? `${dir}/access.log` : 'off'}; client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  server { listen 127.0.0.1:${port}; root ${dir};${keepalive} } }`);
  return conf;
}

/** User + system CPU of a process, in clock ticks (1/100 s). */
export function cpuTicks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(f[11]) + Number(f[12]);
}

export function rssBytes(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
}
