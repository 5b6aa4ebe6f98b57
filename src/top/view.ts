/**
 * The terminal view of `kerntap top`: plain ANSI (alternate screen, cursor
 * home, clear), no dependency. Every string that came from the kernel or
 * the filesystem (comm, cgroup paths, container names) goes through
 * `escapeTerminal` first, so no byte of a process name can reach the
 * terminal as a control sequence.
 */
import { formatFilter, type Connection, type Filter, type SortKey, type TopEvent } from './model.js';

/**
 * Control characters (C0, DEL, C1), and the Unicode format characters that
 * reorder or hide text (bidi overrides and isolates, zero-width), are shown
 * as escapes: \e for ESC, \xNN or \u{NNNN} otherwise. A backslash is doubled,
 * so an escape shown is never ambiguous with a name that spells one.
 */
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\\\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb]/gu;

export function escapeTerminal(s: string): string {
  return s.replace(UNSAFE, (ch) => {
    if (ch === '\\') return '\\\\';
    if (ch === '\u001b') return '\\e';
    const c = ch.codePointAt(0)!;
    return c < 0x100 ? `\\x${c.toString(16).padStart(2, '0')}` : `\\u{${c.toString(16)}}`;
  });
}

/** Cuts to `width` code points, marking a cut with "…". */
export function fit(s: string, width: number): string {
  const cps = [...s];
  if (cps.length <= width) return s;
  return width <= 1 ? cps.slice(0, width).join('') : `${cps.slice(0, width - 1).join('')}…`;
}

function pad(s: string, width: number, right = false): string {
  const f = fit(s, width);
  const n = width - [...f].length;
  return right ? ' '.repeat(n) + f : f + ' '.repeat(n);
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${Math.round(n)}B`;
  const units = ['K', 'M', 'G', 'T', 'P'];
  let v = n;
  let i = -1;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)}${units[i]}`;
}

export function formatDuration(seconds: number | null): string {
  if (seconds === null) return '-';
  if (seconds < 1) return `${Math.round(seconds * 1000)}ms`;
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(Math.floor(seconds % 60)).padStart(2, '0')}s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(seconds / 86400)}d${Math.floor((seconds % 86400) / 3600)}h`;
}

function addr(a: string, port: number): string {
  return a.includes(':') ? `[${a}]:${port}` : `${a}:${port}`;
}

interface Column<T> {
  title: string;
  width: number;
  right?: boolean;
  get: (row: T) => string;
}

const CONN_COLUMNS: Column<Connection>[] = [
  { title: 'PID', width: 7, right: true, get: (c) => (c.pid ? String(c.pid) : '-') },
  { title: 'COMM', width: 16, get: (c) => escapeTerminal(c.comm) || '-' },
  { title: 'CONTAINER/CGROUP', width: 24, get: (c) => escapeTerminal(c.container) || '-' },
  { title: 'LOCAL', width: 22, get: (c) => addr(c.local, c.local_port) },
  { title: 'PEER', width: 22, get: (c) => addr(c.peer, c.peer_port) },
  { title: 'ROLE', width: 6, get: (c) => c.role },
  { title: 'STATE', width: 11, get: (c) => c.state },
  { title: 'SENT', width: 7, right: true, get: (c) => formatBytes(c.bytes_sent) },
  { title: 'RECV', width: 7, right: true, get: (c) => formatBytes(c.bytes_received) },
  { title: 'TX/s', width: 7, right: true, get: (c) => formatBytes(c.send_rate) },
  { title: 'RX/s', width: 7, right: true, get: (c) => formatBytes(c.receive_rate) },
  { title: 'SRTT', width: 7, right: true, get: (c) => (c.srtt_us ? formatDuration(c.srtt_us / 1e6) : '-') },
  { title: 'AGE', width: 7, right: true, get: (c) => formatDuration(c.age_s) },
];

const EVENT_COLUMNS: Column<TopEvent>[] = [
  { title: 'TIME', width: 12, get: (e) => e.time.slice(11, 23) },
  { title: 'EVENT', width: 7, get: (e) => e.type },
  { title: 'PID', width: 7, right: true, get: (e) => (e.pid ? String(e.pid) : '-') },
  { title: 'COMM', width: 16, get: (e) => escapeTerminal(e.comm) || '-' },
  { title: 'CONTAINER/CGROUP', width: 24, get: (e) => escapeTerminal(e.container) || '-' },
  { title: 'LOCAL', width: 22, get: (e) => addr(e.local, e.local_port) },
  { title: 'PEER', width: 22, get: (e) => addr(e.peer, e.peer_port) },
  { title: 'DURATION', width: 9, right: true, get: (e) => (e.type === 'accept' ? '' : formatDuration(e.duration_ms / 1000)) },
  { title: 'SENT', width: 7, right: true, get: (e) => (e.type === 'close' ? formatBytes(e.bytes_sent) : '') },
  { title: 'RECV', width: 7, right: true, get: (e) => (e.type === 'close' ? formatBytes(e.bytes_received) : '') },
  { title: 'REASON', width: 11, get: (e) => e.reason },
];

function row<T>(cols: Column<T>[], r: T): string {
  return cols.map((c) => pad(c.get(r), c.width, c.right)).join(' ');
}

function header<T>(cols: Column<T>[]): string {
  return cols.map((c) => pad(c.title, c.width, c.right)).join(' ');
}

export interface ViewState {
  connections: Connection[];
  total: number;
  events: TopEvent[];
  sort: SortKey;
  reverse: boolean;
  filter: Filter | undefined;
  /** Text being typed after `/` (undefined when not editing). */
  editing: string | undefined;
  notes: string[];
  drops: { events: number; owners: number };
  time: Date;
}

export const KEYS_HELP = 'q quit  s/</> sort  r rate  b bytes  a age  I invert  / or f filter  Esc clear filter';

/** The screen as lines, each at most `width` code points; no control sequences (the caller adds them). */
export function renderLines(v: ViewState, width: number, height: number): string[] {
  const lines: string[] = [];
  const arrow = v.reverse ? '↑' : '↓';
  const filter = v.editing !== undefined ? `filter: ${escapeTerminal(v.editing)}_` : v.filter ? `filter: ${escapeTerminal(formatFilter(v.filter))}` : 'filter: none';
  lines.push(`kerntap top  ${v.time.toISOString().slice(11, 19)}  connections: ${v.connections.length}/${v.total}  sort: ${v.sort}${arrow}  ${filter}`);
  for (const note of v.notes) lines.push(`note: ${escapeTerminal(note)}`);
  if (v.drops.events || v.drops.owners) lines.push(`lost: ${v.drops.events} events (ring buffer full), ${v.drops.owners} owners (table full)`);
  const eventRows = Math.max(3, Math.min(v.events.length, Math.floor((height - lines.length - 4) / 3)));
  const connRows = Math.max(1, height - lines.length - 1 - 1 - 1 - 1 - eventRows - 1);
  lines.push(header(CONN_COLUMNS));
  const shown = v.connections.slice(0, connRows);
  for (const c of shown) lines.push(row(CONN_COLUMNS, c));
  for (let i = shown.length; i < connRows; i++) lines.push('');
  lines.push(`events (newest first)`);
  lines.push(header(EVENT_COLUMNS));
  for (const e of v.events.slice(0, eventRows)) lines.push(row(EVENT_COLUMNS, e));
  for (let i = Math.min(v.events.length, eventRows); i < eventRows; i++) lines.push('');
  lines.push(KEYS_HELP);
  return lines.slice(0, height).map((l) => fit(l, width));
}

/** The same content for a pipe or a file: no screen control, every row, one block per refresh. */
export function renderPlain(v: ViewState, maxEvents = 20): string {
  const lines = [
    `kerntap top ${v.time.toISOString()} connections: ${v.connections.length}/${v.total} sort: ${v.sort}${v.filter ? ` filter: ${escapeTerminal(formatFilter(v.filter))}` : ''}`,
    ...v.notes.map((n) => `note: ${escapeTerminal(n)}`),
    header(CONN_COLUMNS).trimEnd(),
    ...v.connections.map((c) => row(CONN_COLUMNS, c).trimEnd()),
    '',
    header(EVENT_COLUMNS).trimEnd(),
    ...v.events.slice(0, maxEvents).map((e) => row(EVENT_COLUMNS, e).trimEnd()),
    '',
  ];
  return `${lines.join('\n')}\n`;
}

export const ANSI = {
  enter: '\u001b[?1049h\u001b[?25l',
  leave: '\u001b[?25h\u001b[?1049l',
  home: '\u001b[H',
  clearLine: '\u001b[K',
  clearBelow: '\u001b[J',
};

/** One frame: cursor home, each line then clear to its end, clear below. */
export function frame(lines: string[]): string {
  return `${ANSI.home}${lines.map((l) => `${l}${ANSI.clearLine}`).join('\r\n')}${ANSI.clearBelow}`;
}
