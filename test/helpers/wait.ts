/**
 * Waiting on conditions instead of fixed sleeps: a condition checked every
 * few tens of milliseconds until it holds, and kerntap's own poll counter.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { find, parseExposition, value, type Sample } from './exposition.js';

/**
 * Resolves with what `check` returns once that is neither undefined nor
 * false; fails after timeoutMs with `what` and the last value or error.
 */
export async function waitFor<T>(what: string, check: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 20_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const got = await check();
      if (got !== undefined && got !== false) return got;
      last = got;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await delay(everyMs);
  }
}

export interface Scrapable {
  scrape(path?: string, headers?: Record<string, string>): Promise<string>;
}

/** kerntap_polls_total in a scrape; a scrape without it fails the test. */
export function pollsTotal(samples: Sample[]): number {
  const n = value(samples, 'kerntap_polls_total');
  if (n === undefined) throw new Error('kerntap_polls_total missing from the scrape');
  return n;
}

export interface PollWait {
  headers?: Record<string, string>;
  timeoutMs?: number;
  /** Also wait until the scrape shows this, e.g. a new cgroup under its path (kerntap may label a new id by number until its next cgroup walk, at most a second later). */
  until?: (samples: Sample[]) => boolean;
}

/**
 * Waits until kerntap_polls_total passes `past` and returns that scrape. By
 * default `past` is the count now plus one: the poll in flight may have read
 * the maps before whatever the test just did, the one after it has not.
 */
export async function waitForPoll(e: Scrapable, past?: number, opts: PollWait = {}): Promise<Sample[]> {
  const scrape = async () => parseExposition(await e.scrape('/metrics', opts.headers ?? {}));
  const after = past ?? pollsTotal(await scrape()) + 1;
  return waitFor(`kerntap_polls_total > ${after}${opts.until ? ' and the expected series' : ''}`, async () => {
    const s = await scrape();
    return pollsTotal(s) > after && (opts.until?.(s) ?? true) && s;
  }, opts.timeoutMs ?? 20_000);
}

/** waitForPoll() until kerntap_cgroup_cpu_time_seconds_total shows each of these cgroups (labels). */
export function waitForPollWithCgroups(e: Scrapable, cgroups: string[]): Promise<Sample[]> {
  return waitForPoll(e, undefined, {
    until: (s) => cgroups.every((cgroup) => find(s, 'kerntap_cgroup_cpu_time_seconds_total', { cgroup }).length > 0),
  });
}

/** An in-process kerntap (Kerntap.start) as something to scrape. */
export function scrapable(baseUrl: string): Scrapable {
  return {
    async scrape(path = '/metrics', headers = {}) {
      const res = await fetch(`${baseUrl}${path}`, { headers });
      if (res.status !== 200) throw new Error(`GET ${path}: HTTP ${res.status}`);
      return res.text();
    },
  };
}
