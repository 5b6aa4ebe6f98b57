/**
 * Deployment files: the Kubernetes manifests validate against the
 * Kubernetes and Prometheus Operator schemas (kubernetes-models) and keep the
 * properties we promise; docker-compose.yml passes `docker-compose config`.
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
  assert.deepEqual(c.securityContext.capabilities, { drop: ['ALL'], add: ['BPF', 'PERFMON'] });
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

test('the shipped kerntap configs are valid', () => {
  const cm = byKind('ConfigMap') as { data: Record<string, string> };
  assert.doesNotThrow(() => parseConfig(cm.data['kerntap.yml']!, 'configmap'));
  assert.doesNotThrow(() => parseConfig(readFileSync(path.join(ROOT, 'deploy/compose/kerntap.yml'), 'utf8'), 'compose'));
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
