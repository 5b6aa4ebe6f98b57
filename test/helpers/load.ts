/**
 * Load for measurements at scale: live loopback connections and many
 * cgroups with CPU time, shared by the benchmarks and the kernel matrix.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { TestCgroup } from './cgroup.js';
import { sleep } from './exporter.js';

/**
 * Live loopback TCP connections: this process holds the client ends, a child
 * process the server ends (so neither needs 2 fds per connection).
 */
export class ConnectionPool {
  private sockets: net.Socket[] = [];
  private listener: { child: ChildProcess; port: number } | undefined;

  /** Established connections as the kernel counts them (server ends). */
  get size(): number {
    if (!this.listener) return 0;
    return spawnSync('ss', ['-Htn', 'state', 'established', `( sport = :${this.listener.port} )`], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).length;
  }

  async grow(to: number): Promise<void> {
    if (!this.listener) {
      const child = spawn(process.execPath, ['-e', `const s = require('net').createServer((c) => c.on('error', () => {}));
        s.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, () => console.log(s.address().port));`], { stdio: ['ignore', 'pipe', 'inherit'] });
      const port = await new Promise<number>((resolve) => child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))));
      this.listener = { child, port };
    }
    while (this.sockets.length < to) {
      const s = net.connect(this.listener.port, '127.0.0.1');
      s.on('error', () => undefined);
      this.sockets.push(s);
      if (this.sockets.length % 500 === 0) await sleep(50);
    }
    await sleep(500);
    const established = this.size;
    if (established < to) throw new Error(`only ${established} of ${to} loopback connections established (ulimit -n is ${spawnSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).stdout.trim()})`);
  }

  close(): void {
    for (const s of this.sockets) s.destroy();
    this.sockets = [];
    this.listener?.child.kill();
    this.listener = undefined;
  }
}

/** Cgroups under the detected cgroup2 root, each with a process run in it so it has CPU entries. */
export class CgroupPool {
  private readonly parent = TestCgroup.unique('kt-bench');
  private readonly children: TestCgroup[] = [];

  get size(): number {
    return this.children.length;
  }

  async grow(to: number): Promise<void> {
    while (this.children.length < to) {
      const batch = [];
      for (let i = 0; i < 50 && this.children.length < to; i++) {
        const cg = new TestCgroup(`c${this.children.length}`, this.parent);
        this.children.push(cg);
        batch.push(cg.runToEnd('true'));
      }
      await Promise.all(batch);
    }
  }

  async destroy(): Promise<void> {
    for (const cg of this.children) await cg.destroy();
    await this.parent.destroy();
  }
}

