/**
 * Deployment files: the Kubernetes manifests validate against the
 * Kubernetes and Prometheus Operator schemas (kubernetes-models) and keep the
 * properties we promise; the kerntap configs they mount are valid and point
 * where the mounts are; docker-compose.yml passes `docker-compose config`;
 * the collector config is consistent; the README's sections say what the files do.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { Service } from 'kubernetes-models/v1/Service';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor';
import { ROOT, requireTool } from '../helpers/env.js';
import { parseConfig } from '../../src/config.js';

const K8S = path.join(ROOT, 'deploy/kubernetes');
/**
 * What both deployments grant: loading and attaching BPF programs, and
 * switching to an unprivileged uid afterwards, which drops all four.
 */
export const DEPLOYED_CAPABILITIES = ['BPF', 'PERFMON', 'SETUID', 'SETGID'];
const docs = readdirSync(K8S).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
  .flatMap((f) => parseAllDocuments(readFileSync(path.join(K8S, f), 'utf8')).map((d) => d.toJS() as { kind: string; metadata: { name: string } }));
const byKind = (kind: string) => docs.find((d) => d.kind === kind) as never;

const MODELS: Record<string, new (o: never) => { validate(): void }> = {
  DaemonSet: DaemonSet as never, Service: Service as never, ConfigMap: ConfigMap as never,
  Namespace: Namespace as never, ServiceMonitor: ServiceMonitor as never,
};

test('Kubernetes manifests validate against their schemas', () => {
  assert.deepEqual(docs.map((d) => d.kind).sort(), ['ConfigMap', 'DaemonSet', 'Namespace', 'Service', 'ServiceMonitor']);
  for (const d of docs) {
    const Model = MODELS[d.kind]!;
    assert.doesNotThrow(() => new Model(d as never).validate(), `${d.kind} ${d.metadata.name} is valid`);
  }
});

test('the DaemonSet runs with the least privilege kerntap needs, probes and limits', () => {
  const ds = byKind('DaemonSet') as { spec: { template: { spec: Record<string, any> } } };
  const pod = ds.spec.template.spec;
  assert.equal(pod.hostPID, true);
  const c = pod.containers[0];
  assert.deepEqual(c.securityContext.capabilities, { drop: ['ALL'], add: DEPLOYED_CAPABILITIES });
  assert.equal(c.securityContext.runAsUser, 0, 'uid 0: Kubernetes grants added capabilities to uid 0 only');
  assert.equal(c.securityContext.privileged, undefined, 'not privileged');
  assert.equal(c.securityContext.allowPrivilegeEscalation, false);
  assert.equal(c.readinessProbe.httpGet.path, '/healthz');
  assert.equal(c.livenessProbe.httpGet.path, '/healthz');
  assert.ok(c.resources.requests.cpu && c.resources.requests.memory && c.resources.limits.cpu && c.resources.limits.memory);
  assert.equal(c.ports[0].containerPort, 10435);
  const svc = byKind('Service') as { spec: { ports: { port: number }[] } };
  assert.equal(svc.spec.ports[0]!.port, 10435);
  const sm = byKind('ServiceMonitor') as { spec: { endpoints: { port: string }[] } };
  assert.equal(sm.spec.endpoints[0]!.port, 'metrics');
});

test('the shipped kerntap configs are valid and point at what the DaemonSet mounts', () => {
  const cm = byKind('ConfigMap') as { data: Record<string, string> };
  const config = parseConfig(cm.data['kerntap.yml']!, 'configmap');
  const c = (byKind('DaemonSet') as { spec: { template: { spec: Record<string, any> } } }).spec.template.spec.containers[0];
  const mounts = new Map<string, string>(c.volumeMounts.map((m: { name: string; mountPath: string }) => [m.mountPath, m.name]));
  assert.ok(mounts.has(config.cgroup.root), `cgroup.root ${config.cgroup.root} is mounted`);
  assert.ok(config.cgroup.runtime_sockets, 'names on');
  const sockets = Object.values(config.cgroup.runtime_sockets).filter(Boolean);
  assert.deepEqual(sockets, ['/run/containerd/containerd.sock']);
  assert.equal(config.security.drop_privileges, true);
  assert.equal(config.security.run_as_gid, 0, 'the root:root 0660 containerd socket stays usable after the drop');
  assert.ok(mounts.has(sockets[0]!), 'the runtime socket is mounted');
  const volumes = (byKind('DaemonSet') as { spec: { template: { spec: { volumes: { name: string; hostPath?: { path: string; type: string } }[] } } } }).spec.template.spec.volumes;
  assert.deepEqual(volumes.find((v) => v.name === mounts.get(sockets[0]!))!.hostPath, { path: '/run/containerd/containerd.sock', type: 'Socket' });
  assert.ok(c.volumeMounts.every((m: { readOnly?: boolean }) => m.readOnly), 'every mount read-only');
});

test('docker-compose config accepts docker-compose.yml', (t) => {
  const probe = spawnSync('docker-compose', ['version'], { encoding: 'utf8' });
  if (!requireTool(t, 'docker-compose', probe.status === 0)) return;
  const r = spawnSync('docker-compose', ['-f', path.join(ROOT, 'docker-compose.yml'), 'config'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const services = Object.keys((parseAllDocuments(r.stdout)[0]!.toJS() as { services: object }).services).sort();
  assert.deepEqual(services, ['demo-client', 'demo-server', 'grafana', 'kerntap', 'otel-collector', 'prometheus']);
  assert.match(r.stdout, /cap_drop:\s*\n\s*- ALL/);
});

test('docker-compose.yml: the kerntap service mounts what its config names, with the deployed capabilities', () => {
  const compose = parseAllDocuments(readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8'))[0]!.toJS() as { services: Record<string, any> };
  const k = compose.services.kerntap;
  assert.deepEqual([k.cap_drop, k.cap_add, k.pid, k.network_mode, k.read_only, k.privileged], [['ALL'], DEPLOYED_CAPABILITIES, 'host', 'host', true, undefined]);
  const mounts = new Map<string, string>(k.volumes.map((v: string) => { const [src, dst] = v.split(':'); return [dst!, src!]; }));
  const configPath = k.command[k.command.indexOf('--config.file') + 1];
  const config = parseConfig(readFileSync(path.join(ROOT, mounts.get(configPath)!), 'utf8'), 'compose');
  assert.equal(mounts.get(config.cgroup.root), '/sys/fs/cgroup');
  assert.ok(config.cgroup.runtime_sockets);
  assert.equal(mounts.get(config.cgroup.runtime_sockets.docker), '/run/docker.sock');
  // OTLP goes to the collector's receiver.
  const otel = parseAllDocuments(readFileSync(path.join(ROOT, 'deploy/compose/otel-collector.yaml'), 'utf8'))[0]!.toJS() as Record<string, any>;
  assert.match(k.environment.OTEL_EXPORTER_OTLP_ENDPOINT, new RegExp(`:${otel.receivers.otlp.protocols.http.endpoint.split(':')[1]}$`));
  assert.ok(compose.services['otel-collector'].ports.includes('4318:4318'));
  for (const [kind, names] of Object.entries(otel.service.pipelines.metrics as Record<string, string[]>)) {
    for (const name of names) assert.ok(otel[kind][name] !== undefined, `collector pipeline uses a defined ${kind.slice(0, -1)} ${name}`);
  }
  const prom = parseAllDocuments(readFileSync(path.join(ROOT, 'deploy/compose/prometheus.yml'), 'utf8'))[0]!.toJS() as { scrape_configs: { static_configs: { targets: string[] }[] }[] };
  assert.deepEqual(prom.scrape_configs[0]!.static_configs[0]!.targets, ['host.docker.internal:10435']);
});

test('the README\'s docker compose and Kubernetes sections say what the files do', () => {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const section = (title: string) => {
    const start = readme.indexOf(`## ${title}\n`);
    assert.ok(start >= 0, `README has "## ${title}"`);
    const end = readme.indexOf('\n## ', start + 1);
    return readme.slice(start, end < 0 ? undefined : end);
  };
  const compose = section('Run with docker compose');
  for (const fact of ['docker-compose up -d --build', 'cap_drop: [ALL]', `cap_add: [${DEPLOYED_CAPABILITIES.join(', ')}]`, 'pid: host', 'network_mode: host',
    '/host/sys/fs/cgroup', '/run/docker.sock', 'deploy/compose/prometheus.yml', 'deploy/compose/otel-collector.yaml', 'http://localhost:3000']) {
    assert.ok(compose.includes(fact), `compose section mentions ${fact}`);
  }
  const k8s = section('Run on Kubernetes');
  const c = (byKind('DaemonSet') as { spec: { template: { spec: Record<string, any> } } }).spec.template.spec.containers[0];
  const { requests, limits } = c.resources;
  for (const fact of ['kubectl apply -k deploy/kubernetes/', `add: [${c.securityContext.capabilities.add.join(', ')}]`, 'drop: [ALL]',
    `${requests.cpu}/${requests.memory}`, `${limits.cpu}/${limits.memory}`, '/healthz', '/run/containerd/containerd.sock', 'ServiceMonitor', String(c.ports[0].containerPort)]) {
    assert.ok(k8s.includes(fact), `Kubernetes section mentions ${fact}`);
  }
});
