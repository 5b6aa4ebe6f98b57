/** kerntap top's pure parts: escaping of kernel strings, filters, sorting, keys, the rendered screen. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { escapeTerminal, renderLines, renderPlain, type ViewState } from '../../src/top/view.js';
import { matches, parseFilter, sortConnections, type Connection } from '../../src/top/model.js';
import { onKeys } from '../../src/top/run.js';

const conn = (over: Partial<Connection>): Connection => ({
  pid: 1, comm: 'x', owner_source: 'connect', container: '/', cgroup: '/', local: '10.0.0.1', local_port: 40000,
  peer: '10.0.0.2', peer_port: 80, role: 'client', state: 'ESTABLISHED', bytes_sent: 0, bytes_received: 0,
  send_rate: 0, receive_rate: 0, srtt_us: 100, age_s: 1, ...over,
});

test('escapeTerminal: control and format characters become visible escapes, nothing else changes', () => {
  assert.equal(escapeTerminal('\u001b]2;PWN\u0007\u001b[31m'), '\\e]2;PWN\\x07\\e[31m');
  assert.equal(escapeTerminal('a\nb\rc\td\u007f\u009b'), 'a\\x0ab\\x0dc\\x09d\\x7f\\x9b');
  assert.equal(escapeTerminal('evil\u202egnp.exe'), 'evil\\u{202e}gnp.exe', 'bidi override');
  assert.equal(escapeTerminal('back\\slash'), 'back\\\\slash', 'a literal backslash cannot fake an escape');
  assert.equal(escapeTerminal('nginx: wörker ☃'), 'nginx: wörker ☃');
});

test('renderLines: no control character from any kernel string reaches the screen', () => {
  const hostile = '\u001b[2J\u001b]0;x\u0007\u0000\u009b';
  const v: ViewState = {
    connections: [conn({ comm: hostile, container: hostile })], total: 1,
    events: [{ time: new Date().toISOString(), type: 'close', reason: '', pid: 2, comm: hostile, container: hostile, role: 'client', local: '1.2.3.4', local_port: 1, peer: '::1', peer_port: 2, duration_ms: 5, bytes_sent: 3, bytes_received: 4 }],
    sort: 'rate', reverse: false, filter: parseFilter(`comm:${hostile}`), editing: undefined, notes: [hostile], drops: { events: 1, owners: 0 }, time: new Date(),
  };
  for (const text of [renderLines(v, 200, 30).join('\n'), renderPlain(v)]) {
    // eslint-disable-next-line no-control-regex
    assert.doesNotMatch(text.replace(/\n/g, ''), /[\u0000-\u001f\u007f-\u009f]/);
    assert.match(text, /\\e\[2J/);
  }
  const lines = renderLines(v, 80, 30);
  assert.ok(lines.length <= 30 && lines.length >= 28, String(lines.length));
  assert.ok(lines.every((l) => [...l].length <= 80));
});

test('filters: text matches comm, container, peer or a port; field:value picks one', () => {
  const c = conn({ comm: 'nginx', container: 'web-1', peer: '192.168.1.9', local_port: 443, peer_port: 51000 });
  assert.ok(matches(c, parseFilter('ngi')));
  assert.ok(matches(c, parseFilter('WEB')));
  assert.ok(matches(c, parseFilter('443')));
  assert.ok(!matches(c, parseFilter('44')), 'a port matches whole');
  assert.ok(matches(c, parseFilter('port:51000')));
  assert.ok(!matches(c, parseFilter('comm:web')));
  assert.ok(matches(c, parseFilter('peer:192.168.1.9:51000')));
  assert.equal(parseFilter('  '), undefined);
});

test('sorting: rate, bytes, age (oldest first, unknown age first), highest first; invert', () => {
  const a = conn({ comm: 'a', send_rate: 10, bytes_sent: 1, age_s: 5 });
  const b = conn({ comm: 'b', receive_rate: 20, bytes_sent: 100, age_s: 1, local_port: 40001 });
  const c = conn({ comm: 'c', bytes_received: 50, age_s: null, local_port: 40002 });
  assert.deepEqual(sortConnections([a, b, c], 'rate').map((x) => x.comm), ['b', 'a', 'c']);
  assert.deepEqual(sortConnections([a, b, c], 'bytes').map((x) => x.comm), ['b', 'c', 'a']);
  assert.deepEqual(sortConnections([a, b, c], 'age').map((x) => x.comm), ['c', 'a', 'b']);
  assert.deepEqual(sortConnections([a, b, c], 'bytes', true).map((x) => x.comm), ['a', 'c', 'b']);
});

test('keys: sort keys, invert, filter editing (Enter applies, Esc cancels or clears), q quits, arrows ignored', () => {
  const v = { sort: 'rate' as const as 'rate' | 'bytes' | 'age', reverse: false, filter: undefined as ReturnType<typeof parseFilter>, editing: undefined as string | undefined };
  let quit = 0;
  const keys = (k: string) => onKeys(k, v, () => quit++);
  keys('b'); assert.equal(v.sort, 'bytes');
  keys('>'); assert.equal(v.sort, 'age');
  keys('<<'); assert.equal(v.sort, 'rate');
  keys('I'); assert.equal(v.reverse, true);
  keys('\u001b[A'); assert.equal(v.filter, undefined);
  keys('/port:80x\u007f\r'); assert.deepEqual(v.filter, { field: 'port', text: '80' });
  keys('fabc\u001b'); assert.deepEqual(v.filter, { field: 'port', text: '80' }, 'Esc while typing cancels');
  keys('\u001b'); assert.equal(v.filter, undefined, 'Esc clears the filter');
  keys('q'); assert.equal(quit, 1);
  keys('\u0003'); assert.equal(quit, 2);
});
