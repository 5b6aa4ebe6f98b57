/**
 * Container, pod and namespace names from the container runtimes' own APIs,
 * for the containers and pods that identity.ts found in cgroup paths.
 *
 * Optional by design: a runtime whose socket is absent is skipped, one that
 * fails or is slow costs at most `timeoutMs` per refresh, and a cgroup whose
 * names are unknown keeps its path and ids with empty names.
 *
 * - docker and podman: the Engine API (`GET /containers/json?all=1`) over the unix
 *   socket; podman serves the docker-compatible API.
 * - containerd and CRI-O: the Kubernetes CRI (`runtime.v1.RuntimeService`,
 *   ListContainers and ListPodSandbox) over gRPC, as the kubelet asks them.
 *
 * One listing answers for every running container, so a refresh is one
 * request per runtime; it happens only when a container or pod without a
 * name shows up, at most every `minRefreshMs`, and an id still unknown
 * afterwards (e.g. a cgroup not made by any runtime) is asked for again only
 * after `retryMissMs` (`retryFailedMs` when a runtime failed to answer).
 */
import { existsSync } from 'node:fs';
import http from 'node:http';
import type { Logger } from 'pino';

/** Labels added next to the identity labels when name lookups are on. */
export const NAME_LABELS = ['container.name', 'k8s.pod.name', 'k8s.namespace.name'] as const;

/** The name Kubernetes tooling (cAdvisor, kubectl top) gives a pod's sandbox ("pause") container. */
export const SANDBOX_CONTAINER_NAME = 'POD';

export interface ContainerInfo {
  name: string;
  /** The runtime whose socket listed it (tells containerd from CRI-O under the cgroupfs driver). */
  runtime: string;
  podUid: string;
}

export interface PodInfo {
  name: string;
  namespace: string;
}

export interface Listing {
  containers: Map<string, ContainerInfo>;
  pods: Map<string, PodInfo>;
}

export interface RuntimeSource {
  /** Runtime name as in the container.runtime.name attribute: docker, podman, containerd, cri-o. */
  readonly runtime: string;
  readonly socket: string;
  list(timeoutMs: number): Promise<Listing>;
  close(): void;
}

/** Labels the kubelet puts on every container it creates, in every runtime. */
const K8S_CONTAINER_NAME = 'io.kubernetes.container.name';
const K8S_POD_NAME = 'io.kubernetes.pod.name';
const K8S_POD_NAMESPACE = 'io.kubernetes.pod.namespace';
const K8S_POD_UID = 'io.kubernetes.pod.uid';
/** cri-dockerd marks a pod's sandbox container with this label. */
const DOCKERSHIM_TYPE = 'io.kubernetes.docker.type';

/** A runtime listing is a few hundred bytes per container; far more than this is not a runtime. */
const MAX_REPLY_BYTES = 64 << 20;

function addPodFromLabels(pods: Map<string, PodInfo>, labels: Record<string, string>): string {
  const uid = labels[K8S_POD_UID] ?? '';
  if (uid && labels[K8S_POD_NAME]) pods.set(uid, { name: labels[K8S_POD_NAME], namespace: labels[K8S_POD_NAMESPACE] ?? '' });
  return uid;
}

/** GET over a unix socket, JSON reply, bounded in time and size. */
function getJson(socketPath: string, urlPath: string, timeoutMs: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path: urlPath, headers: { host: 'localhost' }, signal: AbortSignal.timeout(timeoutMs) }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_REPLY_BYTES) req.destroy(new Error(`reply larger than ${MAX_REPLY_BYTES} bytes`));
        else chunks.push(chunk);
      });
      res.on('error', reject);
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`GET ${urlPath}: HTTP ${res.statusCode}`));
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
        } catch {
          reject(new Error(`GET ${urlPath}: reply is not JSON`));
        }
      });
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      reject(err.name === 'AbortError' || err.name === 'TimeoutError' ? new Error(`no answer in ${timeoutMs} ms`) : err);
    });
  });
}

interface EngineContainer {
  Id?: string;
  Names?: string[];
  Labels?: Record<string, string> | null;
}

/** docker, and podman's docker-compatible API. */
export class EngineApiSource implements RuntimeSource {
  constructor(readonly runtime: 'docker' | 'podman', readonly socket: string) {}

  async list(timeoutMs: number): Promise<Listing> {
    // all=1: a container's cgroup runs (runc init) before the runtime lists it as running.
    const reply = await getJson(this.socket, '/containers/json?all=1', timeoutMs);
    if (!Array.isArray(reply)) throw new Error('GET /containers/json: reply is not a list');
    const out: Listing = { containers: new Map(), pods: new Map() };
    for (const c of reply as EngineContainer[]) {
      if (typeof c.Id !== 'string') continue;
      const labels = c.Labels ?? {};
      const podUid = addPodFromLabels(out.pods, labels);
      const name = labels[DOCKERSHIM_TYPE] === 'podsandbox'
        ? SANDBOX_CONTAINER_NAME
        : labels[K8S_CONTAINER_NAME] ?? (c.Names?.[0] ?? '').replace(/^\//, '');
      out.containers.set(c.Id, { name, runtime: this.runtime, podUid });
    }
    return out;
  }

  close(): void {}
}

/**
 * The part of the CRI (k8s.io/cri-api, pkg/apis/runtime/v1/api.proto) these
 * lookups use, with the upstream field numbers; the rest of each message is
 * skipped as unknown fields. Empty requests (no filter) list everything.
 */
const CRI_PROTO = `
syntax = "proto3";
package runtime.v1;
message ListPodSandboxRequest {}
message PodSandboxMetadata { string name = 1; string uid = 2; string namespace = 3; }
message PodSandbox { string id = 1; PodSandboxMetadata metadata = 2; }
message ListPodSandboxResponse { repeated PodSandbox items = 1; }
message ListContainersRequest {}
message ContainerMetadata { string name = 1; }
message Container { string id = 1; string pod_sandbox_id = 2; ContainerMetadata metadata = 3; map<string, string> labels = 8; }
message ListContainersResponse { repeated Container containers = 1; }
`;

interface CriSandbox { id: string; metadata?: { name: string; uid: string; namespace: string } }
interface CriContainer { id: string; pod_sandbox_id: string; metadata?: { name: string }; labels: Record<string, string> }

/** "No connection established. Last error: Error: connect EACCES /x. Resolution note: " → "No connection established: connect EACCES /x". */
function tidyGrpcError(details: string): string {
  return details.replace(/\s*Resolution note:.*$/s, '').replace(/\. Last error: (?:Error: )?/, ': ').replace(/\.$/, '');
}

type Unary = <T>(method: string, request: string, response: string, timeoutMs: number) => Promise<T>;

/** containerd and CRI-O, over the CRI. gRPC is loaded only when such a socket exists. */
export class CriSource implements RuntimeSource {
  private client: Promise<{ call: Unary; close(): void }> | undefined;

  constructor(readonly runtime: 'containerd' | 'cri-o', readonly socket: string) {}

  private connect(): Promise<{ call: Unary; close(): void }> {
    this.client ??= (async () => {
      const [grpc, protobuf] = await Promise.all([import('@grpc/grpc-js'), import('protobufjs')]);
      const root = protobuf.default.parse(CRI_PROTO, { keepCase: true }).root;
      const client = new grpc.Client(`unix:${this.socket}`, grpc.credentials.createInsecure(), {
        'grpc.max_receive_message_length': MAX_REPLY_BYTES,
      });
      const call: Unary = (method, request, response, timeoutMs) => {
        const req = root.lookupType(`runtime.v1.${request}`);
        const res = root.lookupType(`runtime.v1.${response}`);
        return new Promise((resolve, reject) => {
          client.makeUnaryRequest(
            `/runtime.v1.RuntimeService/${method}`,
            (arg: object) => Buffer.from(req.encode(req.fromObject(arg)).finish()),
            (buf: Buffer) => res.toObject(res.decode(buf), { defaults: true, arrays: true, objects: true }),
            {},
            { deadline: Date.now() + timeoutMs },
            (err, value) => (err ? reject(new Error(`${method}: ${tidyGrpcError(err.details || err.message)}`)) : resolve(value as never)),
          );
        });
      };
      return { call, close: () => client.close() };
    })();
    return this.client;
  }

  async list(timeoutMs: number): Promise<Listing> {
    const { call } = await this.connect();
    const [sandboxes, containers] = await Promise.all([
      call<{ items: CriSandbox[] }>('ListPodSandbox', 'ListPodSandboxRequest', 'ListPodSandboxResponse', timeoutMs),
      call<{ containers: CriContainer[] }>('ListContainers', 'ListContainersRequest', 'ListContainersResponse', timeoutMs),
    ]);
    const out: Listing = { containers: new Map(), pods: new Map() };
    const podOfSandbox = new Map<string, string>();
    for (const s of sandboxes.items) {
      if (!s.metadata?.uid) continue;
      out.pods.set(s.metadata.uid, { name: s.metadata.name, namespace: s.metadata.namespace });
      podOfSandbox.set(s.id, s.metadata.uid);
      // The sandbox has a cgroup of its own next to the pod's containers.
      out.containers.set(s.id, { name: SANDBOX_CONTAINER_NAME, runtime: this.runtime, podUid: s.metadata.uid });
    }
    for (const c of containers.containers) {
      const podUid = addPodFromLabels(out.pods, c.labels) || (podOfSandbox.get(c.pod_sandbox_id) ?? '');
      out.containers.set(c.id, { name: c.metadata?.name || (c.labels[K8S_CONTAINER_NAME] ?? ''), runtime: this.runtime, podUid });
    }
    return out;
  }

  close(): void {
    void this.client?.then((c) => c.close(), () => undefined);
  }
}

export interface RuntimeSockets {
  docker: string;
  podman: string;
  containerd: string;
  crio: string;
}

/** One source per configured socket ('' = off). */
export function runtimeSources(sockets: RuntimeSockets): RuntimeSource[] {
  const out: RuntimeSource[] = [];
  if (sockets.docker) out.push(new EngineApiSource('docker', sockets.docker));
  if (sockets.podman) out.push(new EngineApiSource('podman', sockets.podman));
  if (sockets.containerd) out.push(new CriSource('containerd', sockets.containerd));
  if (sockets.crio) out.push(new CriSource('cri-o', sockets.crio));
  return out;
}

export interface RuntimeNamesOptions {
  /** Longest wait for one runtime's listing (they are asked in parallel). */
  timeoutMs: number;
  log: Logger;
  minRefreshMs?: number;
  /** An id no runtime listed is asked for again after this long… */
  retryMissMs?: number;
  /** …or after this long when a runtime failed to answer (it may be the one that knows). */
  retryFailedMs?: number;
  /** Names kept at most (oldest listed first out). */
  maxEntries?: number;
  now?: () => number;
}

const ERROR_LOG_INTERVAL_MS = 600_000;

export class RuntimeNames {
  private readonly containers = new Map<string, ContainerInfo>();
  private readonly pods = new Map<string, PodInfo>();
  /** Ids a refresh did not find, and when they may be asked for again. */
  private readonly missUntil = new Map<string, number>();
  private readonly lastErrorLogMs = new Map<RuntimeSource, number>();
  private lastRefreshMs = -Infinity;
  private readonly minRefreshMs: number;
  private readonly retryMissMs: number;
  private readonly retryFailedMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;
  refreshes = 0;

  constructor(private readonly sources: RuntimeSource[], private readonly opts: RuntimeNamesOptions) {
    this.minRefreshMs = opts.minRefreshMs ?? 1000;
    this.retryMissMs = opts.retryMissMs ?? 60_000;
    this.retryFailedMs = opts.retryFailedMs ?? 10_000;
    this.maxEntries = opts.maxEntries ?? 65_536;
    this.now = opts.now ?? Date.now;
  }

  container(id: string): ContainerInfo | undefined {
    return this.containers.get(id);
  }

  pod(uid: string): PodInfo | undefined {
    return this.pods.get(uid);
  }

  /** Asks the runtimes if any of these containers or pods has no name yet (see the file comment for how often). */
  async learn(containerIds: Iterable<string>, podUids: Iterable<string>): Promise<void> {
    const now = this.now();
    if (now - this.lastRefreshMs < this.minRefreshMs) return;
    const askable = (id: string) => (this.missUntil.get(id) ?? -Infinity) <= now;
    const wanted = [
      ...[...containerIds].filter((id) => !this.containers.has(id) && askable(id)),
      ...[...podUids].filter((uid) => !this.pods.has(uid) && askable(uid)),
    ];
    if (wanted.length === 0) return;
    this.lastRefreshMs = now;
    const allAnswered = await this.refresh();
    for (const [id, until] of this.missUntil) if (until <= now) this.missUntil.delete(id);
    const retryAt = now + (allAnswered ? this.retryMissMs : this.retryFailedMs);
    for (const id of wanted) {
      if (!this.containers.has(id) && !this.pods.has(id)) this.missUntil.set(id, retryAt);
    }
    while (this.missUntil.size > this.maxEntries) this.missUntil.delete(this.missUntil.keys().next().value!);
  }

  /** Asks every runtime whose socket exists; false if one of them failed. */
  private async refresh(): Promise<boolean> {
    this.refreshes++;
    // A socket can appear later (runtime started after kerntap): checked every time.
    const present = this.sources.filter((s) => existsSync(s.socket));
    const results = await Promise.allSettled(present.map((s) => s.list(this.opts.timeoutMs)));
    results.forEach((result, i) => {
      const source = present[i]!;
      if (result.status === 'rejected') return this.logFailure(source, result.reason as Error);
      this.lastErrorLogMs.delete(source);
      for (const [id, info] of result.value.containers) remember(this.containers, id, info, this.maxEntries);
      for (const [uid, info] of result.value.pods) remember(this.pods, uid, info, this.maxEntries);
    });
    return results.every((r) => r.status === 'fulfilled');
  }

  private logFailure(source: RuntimeSource, err: Error): void {
    const now = this.now();
    if (now - (this.lastErrorLogMs.get(source) ?? -Infinity) < ERROR_LOG_INTERVAL_MS) return;
    this.lastErrorLogMs.set(source, now);
    const message = err.message.split('\n')[0]!;
    const uid = process.getuid?.();
    const hint = /EACCES|permission denied/i.test(message) && uid !== 0
      ? ` (kerntap runs as uid ${uid}: give it the socket's group with security.run_as_gid, or set security.drop_privileges: false)`
      : '';
    this.opts.log.warn({ runtime: source.runtime, socket: source.socket }, `container names: ${source.runtime} socket ${source.socket}: ${message}${hint}; names stay empty until it answers`);
  }

  close(): void {
    for (const s of this.sources) s.close();
  }
}

/** Sets key → value as the newest entry, dropping the oldest beyond max. */
function remember<V>(map: Map<string, V>, key: string, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > max) map.delete(map.keys().next().value!);
}
