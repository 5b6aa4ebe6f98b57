/**
 * `kerntap top`: the refresh loop, keys, and the terminal's state. Loads
 * bpf/top.bpf.o for as long as it runs; q, Ctrl-C, SIGINT and SIGTERM
 * restore the terminal and detach everything.
 */
import { pino } from 'pino';
import { CgroupResolver } from '../cgroup/resolver.js';
import { detectCgroup2Root } from '../cgroup/mount.js';
import { RuntimeNames, runtimeSources } from '../cgroup/runtime.js';
import type { Config } from '../config.js';
import { matches, Owners, parseFilter, SORT_KEYS, sortConnections, TopState, type Connection, type Filter, type Snapshot, type SortKey } from './model.js';
import { TopSource, type KernelEvent } from './source.js';
import { ANSI, frame, renderLines, renderPlain, type ViewState } from './view.js';

export interface TopOptions {
  once: boolean;
  output: 'table' | 'json';
  intervalMs: number;
  sort: SortKey;
  filter?: string;
  maxSockets: number;
  ringBytes: number;
  config: Config;
}

interface Io {
  stdout: NodeJS.WriteStream;
  stdin: NodeJS.ReadStream;
  stderr: NodeJS.WriteStream;
}

function owners(config: Config): { owners: Owners; close: () => void } {
  let resolver: CgroupResolver | undefined;
  try {
    resolver = new CgroupResolver({ root: detectCgroup2Root(config.cgroup.root), ttlMs: config.cgroup.ttl });
  } catch {
    resolver = undefined; // no cgroup2 mount: cgroups are shown by id
  }
  const sockets = config.cgroup.runtime_sockets;
  const names = sockets === false ? undefined
    : new RuntimeNames(runtimeSources(sockets), { timeoutMs: config.cgroup.runtime_timeout, log: pino({ level: 'silent' }) });
  return { owners: new Owners(resolver, names), close: () => names?.close() };
}

const DRAIN_MS = 100;
/** Events held between two refreshes at most (the latest; a burst beyond is cut before decoding names). */
const MAX_PENDING = 50_000;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function runTop(opts: TopOptions, io: Io = { stdout: process.stdout, stdin: process.stdin, stderr: process.stderr }): Promise<number> {
  const source = TopSource.open({
    ephemeralPorts: (opts.config.collectors as { tcp: { ephemeral_ports: [number, number] } }).tcp.ephemeral_ports,
    maxSockets: opts.maxSockets,
    ringBytes: opts.ringBytes,
  });
  const names = owners(opts.config);
  const state = new TopState(names.owners);
  let connections: Connection[] = [];
  let drops = { events: 0, owners: 0 };
  const view = {
    sort: opts.sort,
    reverse: false,
    filter: parseFilter(opts.filter ?? '') as Filter | undefined,
    editing: undefined as string | undefined,
  };

  // The ring buffer is drained every DRAIN_MS between refreshes, so a burst
  // of connections fills it less.
  let pending: KernelEvent[] = [];
  let draining: Promise<void> | undefined;
  const drain = () => (draining ??= source.events().then((evs) => {
    pending.push(...evs);
    if (pending.length > MAX_PENDING) pending = pending.slice(-MAX_PENDING);
  }).finally(() => (draining = undefined)));
  const drainer = setInterval(() => void drain().catch(() => undefined), DRAIN_MS);
  const tick = async () => {
    const conns = await source.connections();
    await drain();
    const events = pending;
    pending = [];
    // The event pane keeps the latest events that match the filter in force when they come.
    connections = await state.update(conns, events, Date.now(), (e) => matches(e, view.filter));
    drops = await source.drops();
  };
  const viewState = (): ViewState => ({
    connections: sortConnections(connections.filter((c) => matches(c, view.filter)), view.sort, view.reverse),
    total: connections.length,
    events: state.events().filter((e) => matches(e, view.filter)),
    sort: view.sort, reverse: view.reverse, filter: view.filter, editing: view.editing,
    notes: source.notes, drops, time: new Date(),
  });
  const snapshot = (): Snapshot => {
    const v = viewState();
    return { time: v.time.toISOString(), interval_ms: state.lastIntervalMs, connections: v.connections, events: v.events, drops, notes: source.notes };
  };

  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    clearInterval(drainer);
    source.close();
    names.close();
  };

  if (opts.once) {
    try {
      // Two samples one interval apart: rates need an interval, and the
      // events of that interval are the "recent" ones.
      await tick();
      await sleep(opts.intervalMs);
      await tick();
      const text = opts.output === 'json' ? `${JSON.stringify(snapshot(), null, 2)}\n` : renderPlain(viewState(), Number.MAX_SAFE_INTEGER);
      // A pipe is written asynchronously: the process must not exit before it drained.
      await new Promise<void>((resolve) => io.stdout.write(text, () => resolve()));
    } finally {
      close();
    }
    return 0;
  }

  const tty = Boolean(io.stdout.isTTY) && opts.output === 'table';
  let stop!: () => void;
  const stopped = new Promise<void>((r) => (stop = r));
  let wake: (() => void) | undefined;
  const render = () => {
    if (closed) return;
    if (!tty) return;
    io.stdout.write(frame(renderLines(viewState(), io.stdout.columns || 80, io.stdout.rows || 24)));
  };
  const restore = () => {
    if (tty) {
      io.stdout.write(ANSI.leave);
      if (io.stdin.isTTY) io.stdin.setRawMode(false);
    }
  };
  const quit = () => {
    restore();
    close();
    stop();
    wake?.();
  };
  process.once('SIGINT', quit);
  process.once('SIGTERM', quit);
  process.once('exit', restore);

  if (tty) {
    io.stdout.write(ANSI.enter);
    if (io.stdin.isTTY) io.stdin.setRawMode(true);
    io.stdin.setEncoding('utf8');
    io.stdin.on('data', (chunk: string) => {
      onKeys(chunk, view, quit);
      render();
    });
    io.stdin.resume();
    io.stdout.on('resize', render);
  }

  try {
    while (!closed) {
      await tick();
      if (closed) break;
      if (tty) render();
      else {
        const text = opts.output === 'json' ? `${JSON.stringify(snapshot())}\n` : renderPlain(viewState());
        await new Promise<void>((resolve) => io.stdout.write(text, () => resolve()));
      }
      await Promise.race([sleep(opts.intervalMs), new Promise<void>((r) => (wake = r)), stopped]);
    }
  } catch (err) {
    if (closed) return 0; // a refresh in flight when q or a signal closed the object
    restore();
    close();
    throw err;
  } finally {
    io.stdin.pause();
    io.stdout.off('resize', render);
    process.off('SIGINT', quit);
    process.off('SIGTERM', quit);
  }
  return 0;
}

interface KeyState {
  sort: SortKey;
  reverse: boolean;
  filter: Filter | undefined;
  editing: string | undefined;
}

/** Applies keys as top and htop users expect them. */
export function onKeys(chunk: string, v: KeyState, quit: () => void): void {
  // Escape sequences (arrows, function keys) are skipped whole; a lone ESC is the Esc key.
  const keys = chunk.match(/\u001b\[[0-9;?]*[ -/]*[@-~]|\u001bO.|[\s\S]/gu) ?? [];
  for (const key of keys) {
    if (v.editing !== undefined) {
      if (key === '\r' || key === '\n') {
        v.filter = parseFilter(v.editing);
        v.editing = undefined;
      } else if (key === '\u001b' || key === '\u0003') v.editing = undefined;
      else if (key === '\u007f' || key === '\b') v.editing = [...v.editing].slice(0, -1).join('');
      else if (key.length <= 2 && !/^[\u0000-\u001f\u007f]/u.test(key)) v.editing += key;
      continue;
    }
    const i = SORT_KEYS.indexOf(v.sort);
    switch (key) {
      case 'q': case 'Q': case '\u0003': quit(); return;
      case 's': case '>': v.sort = SORT_KEYS[(i + 1) % SORT_KEYS.length]!; break;
      case '<': v.sort = SORT_KEYS[(i + SORT_KEYS.length - 1) % SORT_KEYS.length]!; break;
      case 'r': v.sort = 'rate'; break;
      case 'b': v.sort = 'bytes'; break;
      case 'a': v.sort = 'age'; break;
      case 'I': v.reverse = !v.reverse; break;
      case '/': case 'f': v.editing = ''; break;
      case '\u001b': v.filter = undefined; break;
      default: break;
    }
  }
}
