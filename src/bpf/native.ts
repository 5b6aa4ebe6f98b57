/**
 * Typed view of the C++ addon (native/*.cc; native/kerntap.h says which file holds what).
 *
 * The addon is deliberately thin: open/load/attach an object, read maps in
 * batches with per-CPU values summed, run BPF iterators, report program
 * stats. Every policy decision (what to load, labels, limits) lives in
 * TypeScript.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ObjectBtf } from './layout.js';

export interface OpenOptions {
  /** `const volatile` globals in .rodata, set before load: name -> little-endian bytes. */
  rodata?: Record<string, Buffer>;
  /** Overrides of max_entries, by map name, applied before load. */
  maxEntries?: Record<string, number>;
  /** Overrides of map_flags (e.g. BPF_F_NO_PREALLOC), by map name, applied before load. */
  mapFlags?: Record<string, number>;
  /** Programs not to load (autoload off), by program (function) name. */
  skipPrograms?: string[];
  /** Keep the verifier log tail (bytes) for error messages. Default 16 KiB. */
  logSize?: number;
}

export interface ProgramInfo {
  name: string;
  section: string;
  id: number;
  /** Cumulative run time in ns and run count, non-zero only while bpf_stats is enabled. */
  runTimeNs: bigint;
  runCount: bigint;
  /** Number of times the program was not run because recursion was detected (5.12+). */
  recursionMisses: bigint;
}

export interface MapInfo {
  name: string;
  id: number;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  /** map_flags as created. */
  flags: number;
  /** Kernel memory of the map in bytes (fdinfo memlock): usage on 6.4+, a capacity estimate before; 0 if unknown. */
  memlock: number;
  /** A map libbpf made for the object's globals (.rodata, .bss, .data, .kconfig). */
  internal: boolean;
}

export interface MapBatch {
  /** count entries; key i is keys.subarray(i*keySize, (i+1)*keySize). */
  count: number;
  keySize: number;
  keys: Buffer;
  /** value i is words [i*valueWords, (i+1)*valueWords), per-CPU copies already summed. */
  valueWords: number;
  values: BigUint64Array;
}

export interface BpfObjectHandle {
  /** Attaches every loaded program that is not an iterator; iterators get a link for runIter. */
  attach(): void;
  programs(): ProgramInfo[];
  maps(): MapInfo[];
  /** Batch lookup of a whole map off the event loop; per-CPU values are summed per u64 word. */
  readMap(mapName: string): Promise<MapBatch>;
  /** Runs an iterator program (e.g. iter/tcp) off the event loop and returns everything it wrote. */
  runIter(programName: string): Promise<Buffer>;
  /**
   * Takes every record a ring buffer map holds now (up to 8 MiB per call),
   * off the event loop: each is [u32 length LE][bytes], padded to 8 bytes.
   * One drain at a time per map (EBUSY otherwise).
   */
  drainRing(mapName: string): Promise<Buffer>;
  /**
   * Writes one element (for per-CPU maps the same value goes to every CPU).
   * With onlyIfAbsent, writes only a new key and returns false if it exists.
   */
  updateElem(mapName: string, key: Buffer, value: Buffer, onlyIfAbsent?: boolean): boolean;
  /**
   * Removes the keys and returns their values at removal (per-CPU copies
   * summed per u64 word; found[i] = 0 for a key that was absent). Atomic per
   * key where the kernel has lookup-and-delete for the map (hashes, 5.14+).
   * Off the event loop.
   */
  takeElems(mapName: string, keys: Buffer): Promise<{ found: Uint8Array; values: BigUint64Array }>;
  /** Deletes the given keys (count keys of the map's key size, back to back), off the event loop. Resolves to how many were deleted. */
  deleteKeys(mapName: string, keys: Buffer): Promise<number>;
  /** The object's BTF: map key and value types, globals, enums (see src/bpf/layout.ts). */
  btf(): ObjectBtf;
  /** Detaches all links and closes the object. Idempotent. */
  close(): void;
}

export interface NativeBinding {
  BpfObject: new (objectPath: string, options?: OpenOptions) => BpfObjectHandle;
  /** The BTF of an object file, opened but not loaded (no privileges needed): what btf() returns once loaded. */
  objectBtf(objectPath: string): ObjectBtf;
  /** Number of possible CPUs (sizes per-CPU buffers). */
  numPossibleCpus(): number;
  /** True when the running kernel's BTF (/sys/kernel/btf/vmlinux) has a type of this name and kind. */
  btfHasType(name: string, kind: 'typedef' | 'struct' | 'func' | 'enum'): boolean;
  /** Frees the kernel BTF that btfHasType parsed (about 7 MB); a later btfHasType parses it again. */
  releaseKernelBtf(): void;
  /** Returns freed native heap to the kernel (glibc malloc_trim); false where there was nothing to return or no glibc. */
  trimMemory(): boolean;
  /** Turns on BPF run-time stats while the returned fd is open (BPF_ENABLE_STATS). */
  enableStats(): number;
  closeFd(fd: number): void;
  /** The libbpf version the addon was built against, e.g. "1.1". */
  libbpfVersion(): string;
}

/**
 * Errors thrown by the addon carry `code`:
 *  - 'ENOBTF'      kernel BTF missing
 *  - 'EPERM'/'EACCES' with `capability` naming what is missing (e.g. CAP_BPF)
 *  - 'EVERIFIER'   the verifier rejected a program; `program` and `verifierLog` (tail) are set
 *  - 'ENOENT'      object file, map or program not found
 *  - 'EATTACH'     attaching `program` failed
 *  and otherwise the errno name.
 */
export interface NativeError extends Error {
  code: string;
  errno?: number;
  program?: string;
  capability?: string;
  verifierLog?: string;
}

const here = path.dirname(fileURLToPath(import.meta.url));
/** Repository (or package) root: dist/src/bpf -> ../../.. ; src/bpf -> ../.. */
export function packageRoot(): string {
  let dir = here;
  for (let i = 0; i < 5; i++) {
    try {
      const req = createRequire(path.join(dir, 'noop.js'));
      req.resolve(path.join(dir, 'package.json'));
      return dir;
    } catch {
      dir = path.dirname(dir);
    }
  }
  throw new Error(`kerntap: cannot find package root above ${here}`);
}

let cached: NativeBinding | undefined;
export function loadNative(): NativeBinding {
  if (cached) return cached;
  const root = packageRoot();
  const candidates = [
    process.env.KERNTAP_NATIVE,
    path.join(root, 'build', 'Release', 'kerntap_native.node'),
    path.join(root, 'build', 'Debug', 'kerntap_native.node'),
  ].filter((p): p is string => Boolean(p));
  const req = createRequire(import.meta.url);
  const errors: string[] = [];
  for (const candidate of candidates) {
    try {
      cached = req(candidate) as NativeBinding;
      return cached;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      errors.push(e.code === 'MODULE_NOT_FOUND' ? `${candidate} not found` : `${candidate}: ${e.message.split('\n')[0]}`);
    }
  }
  throw new Error(`native addon unavailable (run \`npm run build\`): ${errors[0]}`);
}
