/**
 * Network fixtures for the TCP tests: a network namespace of the test's own
 * joined to the root namespace by a veth pair, the kernel's TCP MIB counters
 * and `ss` socket details, and the deterministic traffic tool.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { ROOT } from './env.js';

export const TRAFFIC = path.join(ROOT, 'test/helpers/tcp_traffic.py');

export function sh(cmd: string[]): string {
  // ss on a busy host prints megabytes.
  return execFileSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
}

/** Resolves when the child prints a line equal to `word`; rejects if it exits first. */
export function waitForLine(child: ChildProcess, word: string, timeoutMs = 30_000): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`no "${word}" from child in ${timeoutMs} ms`)), timeoutMs);
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      if (buf.split('\n').includes(word)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (!buf.split('\n').includes(word)) reject(new Error(`child exited with ${code} before "${word}"`));
    });
  });
}

export function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.on('exit', (code) => resolve(code)));
}

let counter = 0;

/** A netns "kt<pid>n<k>" with a veth to the root namespace: host side .1, namespace side .2 of a /30. */
export class TestNetns {
  readonly name: string;
  readonly hostIf: string;
  readonly nsIf: string;
  readonly hostAddr: string;
  readonly nsAddr: string;

  constructor() {
    const k = (process.pid % 200) * 4 + (counter++ % 4);
    this.name = `kt${process.pid}n${counter}`;
    this.hostIf = `kth${process.pid % 10000}${counter}`;
    this.nsIf = `ktn${process.pid % 10000}${counter}`;
    const a = Math.floor(k / 64);
    const b = (k % 64) * 4;
    this.hostAddr = `10.213.${a}.${b + 1}`;
    this.nsAddr = `10.213.${a}.${b + 2}`;
    sh(['ip', 'netns', 'add', this.name]);
    sh(['ip', 'link', 'add', this.hostIf, 'type', 'veth', 'peer', 'name', this.nsIf]);
    sh(['ip', 'link', 'set', this.nsIf, 'netns', this.name]);
    sh(['ip', 'addr', 'add', `${this.hostAddr}/30`, 'dev', this.hostIf]);
    sh(['ip', 'link', 'set', this.hostIf, 'up']);
    this.exec(['ip', 'addr', 'add', `${this.nsAddr}/30`, 'dev', this.nsIf]);
    this.exec(['ip', 'link', 'set', this.nsIf, 'up']);
    this.exec(['ip', 'link', 'set', 'lo', 'up']);
  }

  exec(cmd: string[]): string {
    return sh(['ip', 'netns', 'exec', this.name, ...cmd]);
  }

  /** Prefix for a shell command to run inside the namespace. */
  get prefix(): string {
    return `ip netns exec ${this.name}`;
  }

  destroy(): void {
    try { sh(['ip', 'link', 'del', this.hostIf]); } catch { /* gone with the namespace */ }
    try { sh(['ip', 'netns', 'del', this.name]); } catch { /* already gone */ }
  }
}

/** TCP MIB counters (/proc/net/snmp "Tcp:" lines) of the root or a test namespace. */
export function tcpMib(ns?: TestNetns): Record<string, number> {
  const text = ns ? ns.exec(['cat', '/proc/net/snmp']) : sh(['cat', '/proc/net/snmp']);
  const lines = text.split('\n').filter((l) => l.startsWith('Tcp:'));
  const names = lines[0]!.split(/\s+/).slice(1);
  const values = lines[1]!.split(/\s+/).slice(1).map(Number);
  return Object.fromEntries(names.map((n, i) => [n, values[i]!]));
}

export interface SsSocket {
  local: string;
  peer: string;
  bytesAcked: number;
  bytesReceived: number;
  rttMs: number;
}

/** Established TCP sockets as `ss -tin` reports them (optionally in a namespace). */
export function ssSockets(ns?: TestNetns): SsSocket[] {
  const out = (ns ? ns.exec(['ss', '-tinH', 'state', 'established']) : sh(['ss', '-tinH', 'state', 'established'])).split('\n');
  const sockets: SsSocket[] = [];
  for (let i = 0; i < out.length; i++) {
    const head = out[i]!.trim().split(/\s+/);
    if (head.length < 4 || !/\d/.test(head[0]!)) continue;
    const info = out[i + 1] ?? '';
    const num = (re: RegExp) => Number(re.exec(info)?.[1] ?? 0);
    sockets.push({
      local: head[2]!,
      peer: head[3]!,
      bytesAcked: num(/bytes_acked:(\d+)/),
      bytesReceived: num(/bytes_received:(\d+)/),
      rttMs: num(/\brtt:([\d.]+)\//),
    });
    i++;
  }
  return sockets;
}
