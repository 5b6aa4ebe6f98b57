/** Every collector kerntap knows, in the order they are started and shown. */
import { cgroupCpu } from './cgroup_cpu.js';
import { http } from './http.js';
import { tcp } from './tcp.js';
import type { CollectorDefinition } from './types.js';

export const collectorDefinitions: readonly CollectorDefinition[] = [cgroupCpu, tcp, http];
