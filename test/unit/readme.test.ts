/** What the README says about names and accuracy matches the code. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../helpers/env.js';
import { prometheusLabel } from '../../src/model/metric.js';
import { IDENTITY_LABELS } from '../../src/cgroup/identity.js';
import { NAME_LABELS } from '../../src/cgroup/runtime.js';

const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');

test('every "label ↔ attribute" pair in the README is an attribute kerntap exports, under its standard translation', () => {
  const pairs = [...readme.matchAll(/`([a-z0-9_]+)` ↔ `([a-z0-9_.]+)`/g)].map((m) => [m[1]!, m[2]!] as const);
  assert.ok(pairs.length >= 3, 'the README names the translation');
  const attributes = new Set<string>([...IDENTITY_LABELS, ...NAME_LABELS]);
  for (const [label, attribute] of pairs) {
    assert.ok(attributes.has(attribute), `${attribute} is exported`);
    assert.equal(label, prometheusLabel(attribute), `${attribute} is ${prometheusLabel(attribute)} in Prometheus`);
  }
});

test('the cpu.stat claim says it holds for leaf cgroups', () => {
  // Paragraphs, list items and table rows that compare with cpu.stat.
  const claims = readme.split(/\n\s*\n|\n(?=- |\| )/).filter((part) => /cpu\.stat/.test(part) && /match/.test(part));
  assert.ok(claims.length > 0);
  for (const claim of claims) assert.match(claim, /leaf/, `qualified: ${claim}`);
});
