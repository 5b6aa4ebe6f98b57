/**
 * Real container runtimes for the integration tests: dockerd, podman (its
 * API service) and containerd's CRI, from the Debian packages, each started
 * with its data, state and socket under one temporary directory and stopped
 * by its pid afterwards. Images are a busybox-static rootfs imported into
 * each runtime (no registry is needed). Containers get no network from the
 * runtime; a test gives one a veth into its namespace (see Veth).
 *
 * The host is left as found: dockerd runs with --iptables=false
 * --ip-forward=false --bridge=none, CNI has only the loopback plugin, and
 * mounts under the temporary directory are undone at teardown.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { detectCgroup2Root } from '../../src/cgroup/mount.js';
import { find, parseExposition, type Sample } from './exposition.js';
import { total } from './net.js';

const run = promisify(execFile);

/** Docker's own client, not any other `docker` earlier in PATH. */
const DOCKER_CLI = '/usr/bin/docker';
const BUSYBOX = '/bin/busybox';
const CNI_BIN = '/usr/lib/cni';
export const IMAGE = 'localhost/kt-busybox:1';

/** What the tests need from the system, for requireTool(). */
export function missingRuntimeTools(): string[] {
  const need: [string, string][] = [
    ['docker.io', '/usr/sbin/dockerd'], ['docker.io', DOCKER_CLI], ['podman', '/usr/bin/podman'],
    ['containerd', '/usr/bin/containerd'], ['containerd', '/usr/bin/ctr'], ['runc', '/usr/sbin/runc'],
    ['containernetworking-plugins', `${CNI_BIN}/loopback`], ['busybox-static', BUSYBOX],
  ];
  return [...new Set(need.filter(([, file]) => !existsSync(file)).map(([pkg]) => pkg))];
}

export interface RealContainer {
  id: string;
  name: string;
  /** Its cgroup as kerntap labels it: the path under the cgroup2 mount, from /proc/<pid>/cgroup. */
  cgroup: string;
  pid: number;
  /** CRI only: the pod it belongs to. */
  pod?: { uid: string; name: string; namespace: string; sandboxId: string };
}

export interface Runtime {
  readonly kind: 'docker' | 'podman' | 'containerd';
  /** The socket kerntap is pointed at. */
  readonly socket: string;
  /** The daemon answering on the socket (SIGSTOP makes it hang). */
  readonly pid: number;
  /** Starts `sh -c script` detached, without network; resolves once its process runs. */
  start(name: string, script: string): Promise<RealContainer>;
  /** Stops and deletes it (its cgroup goes away). */
  remove(c: RealContainer): Promise<void>;
  stop(): Promise<void>;
}

/** Busybox rootfs with `sleep forever` as its command (CRI's sandbox image needs one). */
export function buildRootfs(dir: string): string {
  const rootfs = path.join(dir, 'rootfs');
  mkdirSync(path.join(rootfs, 'bin'), { recursive: true });
  copyFileSync(BUSYBOX, path.join(rootfs, 'bin/busybox'));
  for (const applet of ['sh', 'sleep', 'date', 'nc', 'wget', 'head', 'cat', 'grep', 'seq']) symlinkSync('busybox', path.join(rootfs, 'bin', applet));
  const tar = path.join(dir, 'rootfs.tar');
  execFileSync('tar', ['-C', rootfs, '-cf', tar, '.']);
  return tar;
}

const IMPORT_CHANGES = ['ENV PATH=/bin', 'CMD ["sleep", "2147483647"]'];

/** The path of the process's cgroup under the v2 mount (no cgroup namespace here: the host's path). */
export function cgroupOfPid(pid: number): string {
  const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.startsWith('0::'));
  if (!line) throw new Error(`pid ${pid} has no cgroup v2 line`);
  return line.slice(3);
}

export function cpuUsageUsec(cgroup: string): number {
  const m = /^usage_usec (\d+)$/m.exec(readFileSync(path.join(detectCgroup2Root(), cgroup, 'cpu.stat'), 'utf8'));
  if (!m) throw new Error(`no usage_usec in ${cgroup}/cpu.stat`);
  return Number(m[1]);
}

export function cgroupExists(cgroup: string): boolean {
  return existsSync(path.join(detectCgroup2Root(), cgroup));
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms${lastError ? ` (${String(lastError)})` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A daemon child with its output in a log file; stop() is SIGTERM by pid, then SIGKILL. */
class Daemon {
  readonly child: ChildProcess;
  private readonly exited: Promise<void>;

  constructor(readonly logFile: string, cmd: string, args: string[], env: NodeJS.ProcessEnv = {}) {
    const log = openSync(logFile, 'a');
    this.child = spawn(cmd, args, { stdio: ['ignore', log, log], env: { ...process.env, ...env } });
    this.exited = new Promise((resolve) => this.child.on('exit', () => resolve()));
  }

  get pid(): number {
    return this.child.pid!;
  }

  async ready(socket: string, what: string): Promise<void> {
    await waitFor(`${what} socket ${socket}`, () => {
      if (this.child.exitCode !== null) throw new Error(`${what} exited: ${readFileSync(this.logFile, 'utf8').slice(-2000)}`);
      return existsSync(socket) ? true : undefined;
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    process.kill(this.pid, 'SIGCONT'); // a test may have left it hung
    process.kill(this.pid, 'SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 15_000);
    await this.exited;
    clearTimeout(timer);
  }
}

async function pidOfCli(cli: string[], name: string): Promise<number> {
  const { stdout } = await run(cli[0]!, [...cli.slice(1), 'inspect', '-f', '{{.State.Pid}}', name]);
  return Number(stdout.trim());
}

/** docker and podman: the same CLI verbs. */
export class CliRuntime implements Runtime {
  constructor(
    readonly kind: 'docker' | 'podman',
    readonly socket: string,
    private readonly daemon: Daemon,
    private readonly cli: string[],
    private readonly env: NodeJS.ProcessEnv = {},
  ) {}

  get pid(): number {
    return this.daemon.pid;
  }

  /** Runs the runtime's CLI against the test daemon; resolves with its trimmed stdout. */
  exec(args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
    return run(this.cli[0]!, [...this.cli.slice(1), ...args], { env: { ...process.env, ...this.env, ...env }, maxBuffer: 64 << 20 }).then((r) => r.stdout.trim());
  }

  /** A container's output, stdout and stderr interleaved. */
  async logs(id: string): Promise<string> {
    const { stdout } = await run('sh', ['-c', '"$@" 2>&1', 'sh', ...this.cli, 'logs', id], { env: { ...process.env, ...this.env }, maxBuffer: 64 << 20 });
    return stdout;
  }

  async start(name: string, script: string): Promise<RealContainer> {
    const id = await this.exec(['run', '-d', '--name', name, '--network', 'none', IMAGE, 'sh', '-c', script]);
    const pid = await waitFor(`${this.kind} container ${name} running`, async () => (await pidOfCli([...this.cli], name)) || undefined);
    return { id, name, pid, cgroup: cgroupOfPid(pid) };
  }

  async remove(c: RealContainer): Promise<void> {
    await this.exec(['rm', '-f', '-t', '0', c.id]).catch(() => this.exec(['rm', '-f', c.id]));
  }

  async removeAll(): Promise<void> {
    const ids = (await this.exec(['ps', '-aq'])).split('\n').filter(Boolean);
    if (ids.length) await this.exec(['rm', '-f', ...ids]);
  }

  async stop(): Promise<void> {
    await this.removeAll().catch(() => undefined);
    await this.daemon.stop();
  }
}

export async function startDocker(dir: string, rootfsTar: string): Promise<CliRuntime> {
  const socket = path.join(dir, 'docker.sock');
  const daemon = new Daemon(path.join(dir, 'dockerd.log'), '/usr/sbin/dockerd', [
    '--host', `unix://${socket}`, '--exec-opt', 'native.cgroupdriver=cgroupfs',
    '--iptables=false', '--ip-forward=false', '--bridge=none',
    '--data-root', path.join(dir, 'docker-data'), '--exec-root', path.join(dir, 'docker-exec'),
    '--pidfile', path.join(dir, 'docker.pid'),
  ]);
  await daemon.ready(socket, 'dockerd');
  const cli = [DOCKER_CLI, '-H', `unix://${socket}`];
  await waitFor('dockerd answering', () => run(cli[0]!, [...cli.slice(1), 'version']).then(() => true));
  await run(cli[0]!, [...cli.slice(1), 'import', ...IMPORT_CHANGES.flatMap((c) => ['-c', c]), rootfsTar, IMAGE]);
  return new CliRuntime('docker', socket, daemon, cli);
}

function podmanSetup(dir: string): { cli: string[]; env: NodeJS.ProcessEnv } {
  const conf = path.join(dir, 'containers.conf');
  // Root here lacks CAP_SYS_RESOURCE (podman's default rlimits fail) and PID 1 is not systemd.
  writeFileSync(conf, [
    '[containers]', 'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]',
    '[engine]', 'cgroup_manager = "cgroupfs"', 'events_logger = "file"', '',
  ].join('\n'));
  const root = path.join(dir, 'podman-root');
  const runroot = path.join(dir, 'podman-run');
  const storage = path.join(dir, 'storage.conf');
  writeFileSync(storage, `[storage]\ndriver = "overlay"\ngraphroot = "${root}"\nrunroot = "${runroot}"\n`);
  return {
    cli: ['/usr/bin/podman', '--root', root, '--runroot', runroot, '--tmpdir', path.join(dir, 'podman-tmp')],
    env: { CONTAINERS_CONF: conf, CONTAINERS_STORAGE_CONF: storage },
  };
}

export async function startPodman(dir: string, rootfsTar: string): Promise<CliRuntime> {
  const { cli, env } = podmanSetup(dir);
  await run(cli[0]!, [...cli.slice(1), 'import', ...IMPORT_CHANGES.flatMap((c) => ['--change', c]), rootfsTar, IMAGE], { env: { ...process.env, ...env } });
  const socket = path.join(dir, 'podman.sock');
  const daemon = new Daemon(path.join(dir, 'podman.log'), cli[0]!, [...cli.slice(1), 'system', 'service', '--time=0', `unix://${socket}`], env);
  await daemon.ready(socket, 'podman system service');
  return new CliRuntime('podman', socket, daemon, cli, env);
}

/**
 * The CRI messages the tests send, with the field numbers of k8s.io/cri-api
 * pkg/apis/runtime/v1/api.proto (only the fields used; the rest default).
 */
const CRI_PROTO = `
syntax = "proto3";
package runtime.v1;
message PodSandboxMetadata { string name = 1; string uid = 2; string namespace = 3; uint32 attempt = 4; }
message LinuxPodSandboxConfig { string cgroup_parent = 1; }
message PodSandboxConfig { PodSandboxMetadata metadata = 1; string hostname = 2; string log_directory = 3; LinuxPodSandboxConfig linux = 8; }
message RunPodSandboxRequest { PodSandboxConfig config = 1; string runtime_handler = 2; }
message RunPodSandboxResponse { string pod_sandbox_id = 1; }
message PodSandboxIdRequest { string pod_sandbox_id = 1; }
message Empty {}
message ContainerMetadata { string name = 1; uint32 attempt = 2; }
message ImageSpec { string image = 1; }
message ContainerConfig { ContainerMetadata metadata = 1; ImageSpec image = 2; repeated string command = 3; repeated string args = 4; string log_path = 11; }
message CreateContainerRequest { string pod_sandbox_id = 1; ContainerConfig config = 2; PodSandboxConfig sandbox_config = 3; }
message CreateContainerResponse { string container_id = 1; }
message ContainerIdRequest { string container_id = 1; }
message StopContainerRequest { string container_id = 1; int64 timeout = 2; }
`;

class CriClient {
  private readonly client: grpc.Client;
  private readonly root = protobuf.parse(CRI_PROTO, { keepCase: true }).root;

  constructor(socket: string) {
    this.client = new grpc.Client(`unix:${socket}`, grpc.credentials.createInsecure());
  }

  call<T>(method: string, request: string, response: string, arg: object, timeoutMs = 60_000): Promise<T> {
    const req = this.root.lookupType(`runtime.v1.${request}`);
    const res = this.root.lookupType(`runtime.v1.${response}`);
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        `/runtime.v1.RuntimeService/${method}`,
        (a: object) => Buffer.from(req.encode(req.fromObject(a)).finish()),
        (buf: Buffer) => res.toObject(res.decode(buf), { defaults: true }),
        arg,
        { deadline: Date.now() + timeoutMs },
        (err, value) => (err ? reject(new Error(`CRI ${method}: ${err.details || err.message}`)) : resolve(value as T)),
      );
    });
  }

  close(): void {
    this.client.close();
  }
}

/** containerd with the CRI; one pod per container, in the cgroupfs-driver shape /kubepods/besteffort/pod<uid>. */
class CriRuntime implements Runtime {
  readonly kind = 'containerd' as const;
  private readonly sandboxes = new Set<string>();

  constructor(readonly socket: string, private readonly daemon: Daemon, private readonly cri: CriClient, private readonly logDir: string, private readonly bridge: string) {}

  get pid(): number {
    return this.daemon.pid;
  }

  /** `name` is the container's; the pod is "<name>-pod" in namespace "kt-test". */
  async start(name: string, script: string): Promise<RealContainer> {
    const uid = randomUUID();
    const sandboxConfig = {
      metadata: { name: `${name}-pod`, uid, namespace: 'kt-test', attempt: 0 },
      hostname: name,
      log_directory: path.join(this.logDir, uid),
      linux: { cgroup_parent: `/kubepods/besteffort/pod${uid}` },
    };
    mkdirSync(sandboxConfig.log_directory, { recursive: true });
    const { pod_sandbox_id: sandboxId } = await this.cri.call<{ pod_sandbox_id: string }>('RunPodSandbox', 'RunPodSandboxRequest', 'RunPodSandboxResponse', { config: sandboxConfig });
    this.sandboxes.add(sandboxId);
    const { container_id: id } = await this.cri.call<{ container_id: string }>('CreateContainer', 'CreateContainerRequest', 'CreateContainerResponse', {
      pod_sandbox_id: sandboxId,
      config: { metadata: { name, attempt: 0 }, image: { image: IMAGE }, command: ['sh', '-c', script], log_path: `${name}.log` },
      sandbox_config: sandboxConfig,
    });
    await this.cri.call('StartContainer', 'ContainerIdRequest', 'Empty', { container_id: id });
    const cgroup = `${sandboxConfig.linux.cgroup_parent}/${id}`;
    const procs = path.join(detectCgroup2Root(), cgroup, 'cgroup.procs');
    const pid = await waitFor(`CRI container ${name} running`, () => Number(readFileSync(procs, 'utf8').split('\n')[0]) || undefined);
    if (cgroupOfPid(pid) !== cgroup) throw new Error(`CRI container ${id}: process ${pid} is in ${cgroupOfPid(pid)}, not ${cgroup}`);
    return { id, name, pid, cgroup, pod: { uid, name: sandboxConfig.metadata.name, namespace: 'kt-test', sandboxId } };
  }

  async remove(c: RealContainer): Promise<void> {
    await this.cri.call('StopContainer', 'StopContainerRequest', 'Empty', { container_id: c.id, timeout: 0 });
    await this.cri.call('RemoveContainer', 'ContainerIdRequest', 'Empty', { container_id: c.id });
    if (c.pod) await this.removePod(c.pod.sandboxId);
  }

  private async removePod(sandboxId: string): Promise<void> {
    await this.cri.call('StopPodSandbox', 'PodSandboxIdRequest', 'Empty', { pod_sandbox_id: sandboxId });
    await this.cri.call('RemovePodSandbox', 'PodSandboxIdRequest', 'Empty', { pod_sandbox_id: sandboxId });
    this.sandboxes.delete(sandboxId);
  }

  async stop(): Promise<void> {
    process.kill(this.daemon.pid, 'SIGCONT');
    // Removing a sandbox removes its containers.
    for (const id of [...this.sandboxes]) await this.removePod(id).catch(() => undefined);
    this.cri.close();
    await this.daemon.stop();
    try { execFileSync('ip', ['link', 'del', this.bridge], { stdio: 'ignore' }); } catch { /* no pod was made */ }
  }
}

export async function startContainerd(dir: string): Promise<Runtime> {
  const socket = path.join(dir, 'containerd.sock');
  const cniDir = path.join(dir, 'cni');
  mkdirSync(cniDir);
  // The CRI needs an address for a pod: a bridge of the test's own without
  // a gateway or masquerading, so nothing changes ip_forward or iptables.
  // The test gives a pod its reachable network itself (a veth).
  const bridge = `ktcni${process.pid % 100000}`;
  writeFileSync(path.join(cniDir, '10-kt.conflist'), JSON.stringify({
    cniVersion: '0.4.0', name: 'kt-pods',
    plugins: [{
      type: 'bridge', bridge, isGateway: false, ipMasq: false,
      ipam: { type: 'host-local', ranges: [[{ subnet: '10.215.0.0/24' }]], dataDir: path.join(dir, 'cni-ipam') },
    }, { type: 'loopback' }],
  }));
  const config = path.join(dir, 'containerd.toml');
  const cri = 'plugins."io.containerd.grpc.v1.cri"';
  writeFileSync(config, [
    'version = 2',
    `root = "${dir}/containerd-root"`, `state = "${dir}/containerd-state"`,
    '[grpc]', `  address = "${socket}"`,
    '[ttrpc]', `  address = "${socket}.ttrpc"`,
    `[${cri}]`, `  sandbox_image = "${IMAGE}"`,
    // Root here may not lower oom_score_adj below its own (the sandbox's -998 fails otherwise).
    '  restrict_oom_score_adj = true',
    '  netns_mounts_under_state_dir = true',
    `[${cri}.containerd]`, '  default_runtime_name = "runc"',
    `[${cri}.containerd.runtimes.runc]`, '  runtime_type = "io.containerd.runc.v2"',
    `[${cri}.cni]`, `  bin_dir = "${CNI_BIN}"`, `  conf_dir = "${cniDir}"`, '',
  ].join('\n'));
  const daemon = new Daemon(path.join(dir, 'containerd.log'), '/usr/bin/containerd', ['--config', config]);
  await daemon.ready(socket, 'containerd');
  // containerd's CRI takes images as docker archives; podman writes one from the same rootfs.
  const { cli, env } = podmanSetup(dir);
  const archive = path.join(dir, 'image.tar');
  await run(cli[0]!, [...cli.slice(1), 'save', '--format', 'docker-archive', '-o', archive, IMAGE], { env: { ...process.env, ...env } });
  await run('/usr/bin/ctr', ['-a', socket, '-n', 'k8s.io', 'images', 'import', archive]);
  return new CriRuntime(socket, daemon, new CriClient(socket), path.join(dir, 'pod-logs'), bridge);
}

/** Unmounts whatever the runtimes left mounted under dir (overlays, netns, shm), innermost first. */
export function unmountUnder(dir: string): void {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m.startsWith(dir + '/'));
  for (const m of mounts.sort((a, b) => b.length - a.length)) {
    try { execFileSync('umount', ['-l', m]); } catch { /* already gone with its parent */ }
  }
}

/** Where the runtimes make their parent cgroups (cgroupfs driver), in every hierarchy. */
const RUNTIME_CGROUPS = ['docker', 'libpod_parent', 'kubepods'];

function cgroupMounts(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => / - cgroup2? /.test(l)).map((l) => l.split(' ')[4]!);
}

/** The runtimes' parent cgroups that do not exist yet, in any hierarchy (removed again at teardown). */
function newRuntimeCgroups(): string[] {
  return cgroupMounts().flatMap((m) => RUNTIME_CGROUPS.map((d) => path.join(m, d))).filter((d) => !existsSync(d));
}

/** rmdir, children first; a cgroup that still has processes stays (rmdir fails). */
function removeCgroupTree(dir: string): void {
  if (!existsSync(dir)) return;
  for (const d of readdirSync(dir, { withFileTypes: true })) if (d.isDirectory()) removeCgroupTree(path.join(dir, d.name));
  try { rmdirSync(dir); } catch { /* busy: left for whoever still uses it */ }
}

export type RuntimeKind = 'docker' | 'podman' | 'containerd';

export interface Runtimes {
  dir: string;
  docker?: CliRuntime;
  podman?: CliRuntime;
  containerd?: Runtime;
  all: Runtime[];
  teardown(): Promise<void>;
}

/**
 * Starts the runtimes asked for (podman's image store is also where the
 * CRI's docker archive comes from, so podman goes first when either is asked).
 */
export async function startRuntimes(kinds: RuntimeKind[] = ['docker', 'podman', 'containerd']): Promise<Runtimes> {
  const dir = mkdtempSync(path.join(tmpdir(), 'kt-runtimes-'));
  // Image layers on a tmpfs of their own: removing a gigabyte of them from a
  // disk that discards freed blocks takes minutes; unmounting takes nothing.
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=6g,mode=0755', 'kt-runtimes', dir]);
  const out: Runtimes = { dir, all: [], teardown: async () => undefined };
  const cgroupsMade = newRuntimeCgroups();
  out.teardown = async () => {
    for (const r of [...out.all].reverse()) await r.stop().catch(() => undefined);
    unmountUnder(dir);
    for (const cg of cgroupsMade) removeCgroupTree(cg);
    execFileSync('umount', ['-l', dir]);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const tar = buildRootfs(dir);
    if (kinds.includes('podman') || kinds.includes('containerd')) {
      const podman = await startPodman(dir, tar);
      out.all.push(podman);
      if (kinds.includes('podman')) out.podman = podman;
    }
    const [docker, containerd] = await Promise.all([
      kinds.includes('docker') ? startDocker(dir, tar) : undefined,
      kinds.includes('containerd') ? startContainerd(dir) : undefined,
    ]);
    for (const r of [docker, containerd]) if (r) out.all.push(r);
    Object.assign(out, { docker, containerd });
    return out;
  } catch (err) {
    await out.teardown();
    throw err;
  }
}

let vethCount = 0;

/**
 * A veth pair from the root namespace into a container's network namespace:
 * host side .1, container side .2 of a /30, interface "kt0" in the
 * container. Its link comes up last, so a container script can wait for
 * /sys/class/net/kt0/operstate to say "up" and then connect.
 */
export class Veth {
  readonly hostIf: string;
  readonly hostAddr: string;
  readonly containerAddr: string;

  constructor() {
    const k = (process.pid % 250) * 16 + (vethCount++ % 16);
    this.hostIf = `ktv${process.pid % 100000}x${vethCount}`;
    const a = Math.floor(k / 64);
    const b = (k % 64) * 4;
    this.hostAddr = `10.214.${a}.${b + 1}`;
    this.containerAddr = `10.214.${a}.${b + 2}`;
  }

  /** Into the network namespace of this process (a container's). */
  attach(pid: number): void {
    const inNs = (args: string[]) => execFileSync('nsenter', ['-t', String(pid), '-n', 'ip', ...args]);
    execFileSync('ip', ['link', 'add', this.hostIf, 'type', 'veth', 'peer', 'name', 'kt0', 'netns', String(pid)]);
    execFileSync('ip', ['addr', 'add', `${this.hostAddr}/30`, 'dev', this.hostIf]);
    execFileSync('ip', ['link', 'set', this.hostIf, 'up']);
    inNs(['addr', 'add', `${this.containerAddr}/30`, 'dev', 'kt0']);
    inNs(['link', 'set', 'kt0', 'up']);
  }

  destroy(): void {
    try { execFileSync('ip', ['link', 'del', this.hostIf], { stdio: 'ignore' }); } catch { /* gone with the container's namespace */ }
  }
}

/** Shell for a container: wait until the test's veth is up (see Veth). */
export const WAIT_FOR_VETH = 'until grep -q up /sys/class/net/kt0/operstate 2>/dev/null; do sleep 0.05; done';

/**
 * A TCP server on all addresses that reads `request` bytes per connection,
 * answers `response` bytes and closes; it counts what it received and sent,
 * the reference for a client container's bytes.
 */
export async function startCountingServer(port: number, request: number, response: number) {
  const counts = { received: 0, sent: 0, connections: 0 };
  const server = net.createServer((sock) => {
    let got = 0;
    sock.on('data', (d) => {
      counts.received += d.length;
      // The whole request is in: answer and close (busybox nc reads until the server's FIN).
      if (got < request && (got += d.length) >= request) sock.end(Buffer.alloc(response, 120));
    });
    sock.on('close', () => {
      counts.sent += sock.bytesWritten;
      counts.connections++;
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '0.0.0.0', resolve));
  return {
    port,
    counts,
    /** The container's script: `n` connections to host:port, each sending `request` bytes. */
    clientScript: (host: string, n: number) => `for i in $(seq ${n}); do head -c ${request} /dev/zero | nc ${host} ${port} >/dev/null; done`,
    async waitForConnections(n: number, timeoutMs = 30_000): Promise<void> {
      await waitFor(`${n} connections to port ${port}`, () => (counts.connections >= n ? true : undefined), timeoutMs);
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** Scrapes `scrape()` every 250 ms until check() returns a value; fails after the deadline. */
export async function untilMetrics<T>(scrape: () => Promise<string>, what: string, check: (s: Sample[]) => T | undefined, timeoutMs = 30_000): Promise<T> {
  return waitFor(what, async () => check(parseExposition(await scrape())), timeoutMs);
}

/**
 * Known client traffic from a container: `connections` connections of
 * `request` bytes out and `response` bytes back, to a counting server on
 * the host through a veth into the container. The container runs `script`
 * (it waits for the veth); start() gives it the veth and waits for the
 * connections.
 */
export async function startTraffic(connections: number, request: number, response: number, port: number) {
  const veth = new Veth();
  const server = await startCountingServer(port, request, response);
  return {
    server,
    script: `${WAIT_FOR_VETH}; ${server.clientScript(veth.hostAddr, connections)}`,
    async start(c: RealContainer): Promise<void> {
      veth.attach(c.pid);
      await server.waitForConnections(connections);
      if (server.counts.received !== request * connections || server.counts.sent !== response * connections) {
        throw new Error(`the server counted ${server.counts.received} B in, ${server.counts.sent} B out, not ${request * connections} and ${response * connections}`);
      }
    },
    /** Labels of the container's client flow to the server. */
    flow: (labels: Record<string, string>) => ({ ...labels, role: 'client', peer: veth.hostAddr, peer_port: String(port) }),
    async close(): Promise<void> {
      veth.destroy();
      await server.close();
    },
  };
}

/** Waits until the series with these labels is the only one and within 1% of the container cgroup's cpu.stat; returns both values. */
export function expectCpuMatches(scrape: () => Promise<string>, c: RealContainer, labels: Record<string, string>): Promise<[number, number]> {
  return untilMetrics(scrape, `series ${JSON.stringify(labels)} within 1% of cpu.stat`, (s) => {
    const series = find(s, 'kerntap_cgroup_cpu_time_seconds_total', labels);
    const usage = cpuUsageUsec(c.cgroup) / 1e6;
    return series.length === 1 && Math.abs(series[0]!.value / usage - 1) < 0.01 ? [series[0]!.value, usage] : undefined;
  });
}

/** Waits until the container's client bytes on /metrics are exactly what the server counted. */
export async function expectTrafficExact(scrape: () => Promise<string>, traffic: Awaited<ReturnType<typeof startTraffic>>, labels: Record<string, string>): Promise<void> {
  const flow = traffic.flow(labels);
  const { received, sent } = traffic.server.counts;
  const bytes = (s: Sample[]) => [total(s, 'kerntap_tcp_sent_bytes_total', flow), total(s, 'kerntap_tcp_received_bytes_total', flow)];
  await untilMetrics(scrape, `client bytes of ${JSON.stringify(labels)}`, (s) => {
    const [out, inb] = bytes(s);
    return out === received && inb === sent ? true : undefined;
  }).catch(async (err: Error) => {
    const [out, inb] = bytes(parseExposition(await scrape()));
    throw new Error(`${err.message}: kerntap says ${out} B sent, ${inb} B received; the server received ${received} B and sent ${sent} B`);
  });
}
