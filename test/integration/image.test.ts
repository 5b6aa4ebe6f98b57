/**
 * kerntap's own image: the Dockerfile built for real by a dockerd of the
 * test's own (base image from scripts/image-bases.sh, as no registry is
 * reachable), then run as docker-compose.yml and the DaemonSet run it: host
 * PID and network namespaces, every capability dropped but BPF, PERFMON,
 * SETUID and SETGID, no-new-privileges, a read-only root, the host's cgroup
 * tree at /host/sys/fs/cgroup and the Engine socket at /run/docker.sock. It
 * must observe another container's CPU (within 1% of its cpu.stat) and TCP
 * bytes (exact), with the container's name, and end as uid 65534 with no
 * capabilities (Linux 6.5+). A docker whose capability list predates
 * CAP_BPF and CAP_PERFMON (Debian 12's 20.10) refuses them: there the image
 * runs under podman, with the same settings.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { ROOT, bpfUnavailable, requireBpf, requireTool } from '../helpers/env.js';
import { freePort } from '../helpers/net.js';
import { kernelAtLeast } from '../../src/privileges.js';
import { detectCgroup2Root } from '../../src/cgroup/mount.js';
import {
  expectCpuMatches, expectTrafficExact, missingRuntimeTools, startRuntimes, startTraffic, waitFor,
  type CliRuntime, type Runtimes,
} from '../helpers/realruntimes.js';

const run = promisify(execFile);
const BASE = 'kt-base/node:24-bookworm-slim';
const IMAGE = 'kerntap:test';
/** The capabilities of docker-compose.yml and the DaemonSet. */
const CAPS = ['BPF', 'PERFMON', 'SETUID', 'SETGID'];

/** What the Dockerfile's COPY steps take (as .dockerignore leaves them), the Dockerfile and the base's key. */
function imageInputsHash(baseTar: string): string {
  const hash = createHash('sha256');
  const add = (rel: string): void => {
    const abs = path.join(ROOT, rel);
    if (rel === 'bpf/out' || !existsSync(abs)) return;
    if (statSync(abs).isDirectory()) {
      for (const name of readdirSync(abs).sort()) add(path.join(rel, name));
    } else {
      hash.update(`${rel}\0`).update(readFileSync(abs)).update('\0');
    }
  };
  for (const rel of ['Dockerfile', 'package.json', 'package-lock.json', 'binding.gyp', 'tsconfig.json', 'tsconfig.build.json', 'bpf', 'native', 'src', 'bin']) add(rel);
  hash.update(readFileSync(`${baseTar}.key`));
  return hash.digest('hex').slice(0, 16);
}

/** Debian 12's podman seccomp profile. */
const PODMAN_SECCOMP = '/usr/share/containers/seccomp.json';

/**
 * Podman's default seccomp profile with bpf() allowed to CAP_BPF and
 * perf_event_open() to CAP_PERFMON. The profile of Debian 12's podman
 * (containers-common 0.50) allows both to CAP_SYS_ADMIN only, so a container
 * with BPF and PERFMON instead gets EPERM from bpf().
 */
function seccompWithBpfCaps(dir: string): string {
  const profile = JSON.parse(readFileSync(PODMAN_SECCOMP, 'utf8')) as { syscalls: { names: string[]; action: string; includes?: unknown }[] };
  const ours = ['bpf', 'perf_event_open'];
  profile.syscalls = profile.syscalls.map((s) => ({ ...s, names: s.names.filter((n) => !ours.includes(n)) })).filter((s) => s.names.length > 0);
  profile.syscalls.push(
    { names: ['bpf'], action: 'SCMP_ACT_ALLOW', includes: { caps: ['CAP_BPF'] } },
    { names: ['perf_event_open'], action: 'SCMP_ACT_ALLOW', includes: { caps: ['CAP_PERFMON'] } },
  );
  const file = path.join(dir, 'seccomp-bpf.json');
  writeFileSync(file, JSON.stringify(profile));
  return file;
}

let runtimes: Runtimes | undefined;
let docker: CliRuntime;
let podman: CliRuntime;
const missing = missingRuntimeTools();
const undo: (() => unknown)[] = [];

before(async () => {
  if (bpfUnavailable() || missing.length) return;
  runtimes = await startRuntimes(['docker', 'podman']);
  docker = runtimes.docker!;
  podman = runtimes.podman!;
});

after(async () => {
  for (const u of undo.reverse()) await u();
  await runtimes?.teardown();
});

test('the Dockerfile builds, and the image run as in docker-compose.yml observes another container exactly, then holds no privileges', { timeout: 1_200_000 }, async (t) => {
  if (!requireBpf(t)) return;
  if (!requireTool(t, `Debian packages ${missing.join(', ')} (scripts/dev.sh installs them)`, missing.length === 0)) return;
  assert.ok(runtimes, 'dockerd started');

  let started = Date.now();
  const { stdout: baseTar } = await run('bash', [path.join(ROOT, 'scripts/image-bases.sh')], { maxBuffer: 16 << 20 });
  await docker.exec(['import', '-c', 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    '-c', 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/host-ca-certificates.crt', baseTar.trim(), BASE]);
  t.diagnostic(`base image: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  started = Date.now();
  // The image is rebuilt when anything the Dockerfile copies (or the base) changed, else loaded from .tools.
  const cached = path.join(ROOT, '.tools/image-cache', `kerntap-${imageInputsHash(baseTar.trim())}.tar`);
  if (existsSync(cached)) {
    await docker.exec(['load', '-q', '-i', cached]);
    t.diagnostic(`image loaded from ${cached} (same inputs): ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } else {
    // The build's RUN steps fetch Debian and npm packages: host network (the test dockerd has no bridge).
    await docker.exec(['build', '-q', '--network', 'host', '--build-arg', `NODE_IMAGE=${BASE}`, '-t', IMAGE, ROOT], { DOCKER_BUILDKIT: '0' });
    t.diagnostic(`docker build: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    rmSync(path.dirname(cached), { recursive: true, force: true });
    mkdirSync(path.dirname(cached), { recursive: true });
    await docker.exec(['save', '-o', `${cached}.tmp`, IMAGE]);
    renameSync(`${cached}.tmp`, cached);
  }

  // As deploy/compose/kerntap.yml, with the test daemon's socket group (kerntap drops to uid 65534 and keeps that gid).
  const socketGid = statSync(docker.socket).gid;
  const hostRoot = detectCgroup2Root();
  const inContainerRoot = path.join('/host/sys/fs/cgroup', path.relative('/sys/fs/cgroup', hostRoot));
  const port = await freePort();
  const config = path.join(runtimes!.dir, 'kerntap.yml');
  writeFileSync(config, [
    'security:', `  run_as_gid: ${socketGid}`,
    'cgroup:', `  root: ${inContainerRoot}`,
    '  runtime_sockets:', '    docker: /run/docker.sock', "    podman: ''", "    containerd: ''", "    crio: ''", '',
  ].join('\n'));
  // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK (compose sets memlock: -1);
  // raising it needs CAP_SYS_RESOURCE, which root lacks on some hosts (this test
  // machine) and which 5.11+ does not need.
  const hardMemlock = /^Max locked memory\s+\S+\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1];
  const memlock = hardMemlock === 'unlimited' ? ['--ulimit', 'memlock=-1'] : [];
  if (!memlock.length) t.diagnostic(`hard RLIMIT_MEMLOCK here is ${hardMemlock}: the container runs without memlock=-1`);
  const runArgs = (image: string) => [
    'run', '-d', '--name', 'kerntap', '--network', 'host', '--pid', 'host',
    '--cap-drop', 'ALL', ...CAPS.flatMap((c) => ['--cap-add', c]), '--security-opt', 'no-new-privileges:true',
    '--read-only', ...memlock,
    '-v', `${config}:/etc/kerntap/kerntap.yml:ro`, '-v', '/sys/fs/cgroup:/host/sys/fs/cgroup:ro', '-v', `${docker.socket}:/run/docker.sock:ro`,
    image, '--config.file', '/etc/kerntap/kerntap.yml', '--web.listen-address', `127.0.0.1:${port}`, '--poll.interval', '500ms',
  ];
  // Debian 12's docker (20.10) does not know CAP_BPF and CAP_PERFMON and refuses
  // the compose file's cap_add; podman runs the same image with the same settings.
  let runner = docker;
  const dockerVersion = await docker.exec(['version', '-f', '{{.Server.Version}}']);
  let kerntapId = await docker.exec(runArgs(IMAGE)).catch((err: Error) => {
    if (!/unknown capability: "CAP_(BPF|PERFMON)"/.test(err.message)) throw err;
    t.diagnostic(`dockerd ${dockerVersion}: ${err.message.split('\n').find((l) => l.includes('unknown capability'))}; running the image with podman`);
    return undefined;
  });
  if (kerntapId === undefined) {
    const archive = path.join(runtimes!.dir, 'kerntap-image.tar');
    await docker.exec(['save', '-o', archive, IMAGE]);
    await podman.exec(['load', '-q', '-i', archive]);
    runner = podman;
    const args = runArgs(`localhost/${IMAGE}`);
    args.splice(args.indexOf('--read-only'), 0, '--security-opt', `seccomp=${seccompWithBpfCaps(runtimes!.dir)}`);
    kerntapId = await podman.exec(args);
  }
  const kerntap = runner;
  undo.push(async () => t.diagnostic(`kerntap container log:\n${await kerntap.logs(kerntapId!).catch((err: Error) => err.message)}`));
  const url = `http://127.0.0.1:${port}/metrics`;
  const scrape = async () => {
    const res = await fetch(url);
    if (res.status !== 200) throw new Error(`GET ${url}: HTTP ${res.status}`);
    return res.text();
  };
  await waitFor('kerntap in its container serving /metrics', () => scrape().then(() => true), 60_000).catch(async (err: Error) => {
    throw new Error(`${err.message}\nkerntap's log:\n${await kerntap.logs(kerntapId!).catch((e: Error) => e.message)}`);
  });

  // Another container: burns CPU, then makes connections through a veth to the test's server.
  const traffic = await startTraffic(4, 9000, 4000, await freePort());
  undo.push(() => traffic.close());
  const name = 'kt-observed';
  const c = await docker.start(name, `i=0; while [ $i -lt 150000 ]; do i=$((i+1)); done; ${traffic.script}; exec sleep 2147483647`);
  undo.push(() => docker.remove(c));
  await traffic.start(c);
  const who = { cgroup: c.cgroup, container_id: c.id, container_name: name, container_runtime_name: 'docker' };
  const [cpu, usage] = await expectCpuMatches(scrape, c, who);
  t.diagnostic(`CPU: kerntap ${cpu.toFixed(4)} s, cpu.stat ${usage.toFixed(4)} s`);
  await expectTrafficExact(scrape, traffic, who);

  // No privileges left: every thread of the kerntap process (host pid namespace: its pid is visible here).
  const pid = Number(await kerntap.exec(['inspect', '-f', '{{.State.Pid}}', kerntapId!]));
  if (kernelAtLeast(6, 5)) {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    assert.match(status, /^Uid:\s+65534\s+65534\s+65534\s+65534$/m);
    assert.match(status, new RegExp(`^Gid:\\s+${socketGid}\\s+${socketGid}\\s+${socketGid}\\s+${socketGid}$`, 'm'));
    assert.match(status, /^CapEff:\s+0+$/m);
    assert.match(status, /^CapPrm:\s+0+$/m);
  }
  assert.match(await kerntap.logs(kerntapId!), /dropped all privileges after attach/);
});
