/**
 * bcrypt comparisons in a worker thread: each costs tens of milliseconds of
 * CPU on purpose, which on the main thread would hold up scrapes and polls.
 */
import { parentPort } from 'node:worker_threads';
import bcrypt from 'bcryptjs';

export interface CompareRequest {
  id: number;
  password: string;
  hash: string;
}

export interface CompareReply {
  id: number;
  ok: boolean;
}

parentPort?.on('message', ({ id, password, hash }: CompareRequest) => {
  parentPort!.postMessage({ id, ok: bcrypt.compareSync(password, hash) } satisfies CompareReply);
});
