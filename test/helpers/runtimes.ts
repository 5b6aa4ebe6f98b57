/**
 * Stand-ins for container runtime APIs on unix sockets, for the name-lookup
 * tests: docker's Engine API (`GET /containers/json`, the reply shape of the
 * Engine API reference) and the Kubernetes CRI over gRPC. The CRI stand-in
 * declares more of each upstream message than kerntap reads (image, state,
 * timestamps, annotations, with the upstream field numbers), so the tests
 * also show kerntap skipping what it does not use.
 */
import { chmodSync, chownSync, mkdtempSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';

export interface FakeRuntime {
  socket: string;
  /** Requests answered so far. */
  requests: number;
  close(): Promise<void>;
}

/** A directory for sockets that an unprivileged kerntap (uid 65534 after the drop) can traverse. */
export function socketDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'kerntap-rt-'));
  chmodSync(dir, 0o755);
  return dir;
}

/** Gives the socket to group `gid` with mode 0660, as /run/docker.sock is (root:docker). */
export function shareSocket(socket: string, gid: number, mode = 0o660): void {
  chownSync(socket, 0, gid);
  chmodSync(socket, mode);
}

export interface EngineContainer {
  id: string;
  name: string;
  labels?: Record<string, string>;
}

export async function startFakeEngine(socket: string, containers: EngineContainer[]): Promise<FakeRuntime> {
  const fake: FakeRuntime = { socket, requests: 0, close: () => new Promise((r) => server.close(() => r())) };
  const server = http.createServer((req, res) => {
    fake.requests++;
    if (req.method !== 'GET' || !req.url?.startsWith('/containers/json')) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"message":"page not found"}');
      return;
    }
    const body = containers.map((c, i) => ({
      Id: c.id,
      Names: [`/${c.name}`],
      Image: 'nginx:1.27',
      ImageID: `sha256:${'5a'.repeat(32)}`,
      Command: '/docker-entrypoint.sh nginx -g \'daemon off;\'',
      Created: 1_700_000_000 + i,
      State: 'running',
      Status: 'Up 2 hours',
      Ports: [{ PrivatePort: 80, Type: 'tcp' }],
      Labels: c.labels ?? {},
      HostConfig: { NetworkMode: 'bridge' },
      NetworkSettings: { Networks: { bridge: { IPAddress: `172.17.0.${i + 2}` } } },
      Mounts: [],
    }));
    res.writeHead(200, { 'content-type': 'application/json', 'api-version': '1.47' }).end(JSON.stringify(body));
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  return fake;
}

const CRI_SERVER_PROTO = `
syntax = "proto3";
package runtime.v1;
message PodSandboxFilter { string id = 1; }
message ListPodSandboxRequest { PodSandboxFilter filter = 1; }
message PodSandboxMetadata { string name = 1; string uid = 2; string namespace = 3; uint32 attempt = 4; }
enum PodSandboxState { SANDBOX_READY = 0; SANDBOX_NOTREADY = 1; }
message PodSandbox {
  string id = 1; PodSandboxMetadata metadata = 2; PodSandboxState state = 3; int64 created_at = 4;
  map<string, string> labels = 5; map<string, string> annotations = 6; string runtime_handler = 7;
}
message ListPodSandboxResponse { repeated PodSandbox items = 1; }
message ContainerFilter { string id = 1; }
message ListContainersRequest { ContainerFilter filter = 1; }
message ContainerMetadata { string name = 1; uint32 attempt = 2; }
message ImageSpec { string image = 1; }
enum ContainerState { CONTAINER_CREATED = 0; CONTAINER_RUNNING = 1; CONTAINER_EXITED = 2; CONTAINER_UNKNOWN = 3; }
message Container {
  string id = 1; string pod_sandbox_id = 2; ContainerMetadata metadata = 3; ImageSpec image = 4; string image_ref = 5;
  ContainerState state = 6; int64 created_at = 7; map<string, string> labels = 8; map<string, string> annotations = 9; string image_id = 10;
}
message ListContainersResponse { repeated Container containers = 1; }
`;

export interface CriPod {
  sandboxId: string;
  uid: string;
  name: string;
  namespace: string;
  /** Container id → name. */
  containers: Record<string, string>;
}

export async function startFakeCri(socket: string, pods: CriPod[]): Promise<FakeRuntime> {
  const root = protobuf.parse(CRI_SERVER_PROTO, { keepCase: true }).root;
  const method = (name: string, req: string, res: string) => {
    const reqType = root.lookupType(`runtime.v1.${req}`);
    const resType = root.lookupType(`runtime.v1.${res}`);
    return {
      path: `/runtime.v1.RuntimeService/${name}`,
      requestStream: false,
      responseStream: false,
      requestSerialize: (v: object) => Buffer.from(reqType.encode(reqType.fromObject(v)).finish()),
      requestDeserialize: (b: Buffer) => reqType.toObject(reqType.decode(b)),
      responseSerialize: (v: object) => Buffer.from(resType.encode(resType.fromObject(v)).finish()),
      responseDeserialize: (b: Buffer) => resType.toObject(resType.decode(b)),
    };
  };
  const k8sLabels = (p: CriPod, container?: string) => ({
    'io.kubernetes.pod.name': p.name,
    'io.kubernetes.pod.namespace': p.namespace,
    'io.kubernetes.pod.uid': p.uid,
    ...(container ? { 'io.kubernetes.container.name': container } : {}),
  });
  const server = new grpc.Server();
  const fake: FakeRuntime = { socket, requests: 0, close: () => new Promise((r) => server.tryShutdown(() => r())) };
  server.addService({
    ListPodSandbox: method('ListPodSandbox', 'ListPodSandboxRequest', 'ListPodSandboxResponse'),
    ListContainers: method('ListContainers', 'ListContainersRequest', 'ListContainersResponse'),
  }, {
    ListPodSandbox: (_call: unknown, cb: grpc.sendUnaryData<object>) => {
      fake.requests++;
      cb(null, {
        items: pods.map((p) => ({
          id: p.sandboxId,
          metadata: { name: p.name, uid: p.uid, namespace: p.namespace, attempt: 0 },
          state: 'SANDBOX_READY',
          created_at: 1_700_000_000_000_000_000,
          labels: k8sLabels(p),
          annotations: { 'kubernetes.io/config.source': 'api' },
          runtime_handler: 'runc',
        })),
      });
    },
    ListContainers: (_call: unknown, cb: grpc.sendUnaryData<object>) => {
      fake.requests++;
      cb(null, {
        containers: pods.flatMap((p) => Object.entries(p.containers).map(([id, name]) => ({
          id,
          pod_sandbox_id: p.sandboxId,
          metadata: { name, attempt: 1 },
          image: { image: 'docker.io/library/nginx:1.27' },
          image_ref: `sha256:${'7c'.repeat(32)}`,
          state: 'CONTAINER_RUNNING',
          created_at: 1_700_000_000_000_000_000,
          labels: k8sLabels(p, name),
          annotations: { 'io.kubernetes.container.restartCount': '1' },
        }))),
      });
    },
  });
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix:${socket}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
  return fake;
}

/** A socket that accepts connections and never answers: a hung runtime. */
export async function startSilentSocket(socket: string): Promise<FakeRuntime> {
  const held: net.Socket[] = [];
  const fake: FakeRuntime = {
    socket,
    requests: 0,
    close: () => new Promise((r) => {
      for (const s of held) s.destroy();
      server.close(() => r());
    }),
  };
  const server = net.createServer((s) => {
    fake.requests++;
    held.push(s);
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  return fake;
}
