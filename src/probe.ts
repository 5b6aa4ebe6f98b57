/**
 * Feature probing at start: privileges, kernel BTF, and each collector's
 * hooks. A collector whose hooks are missing is reported off with the
 * reason; the others run.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { NativeBinding, NativeError } from './bpf/native.js';
import type { CollectorDefinition, Hook } from './collectors/types.js';
import { missingHelper } from './collectors/common.js';

export const CAP = { SYS_ADMIN: 21, PERFMON: 38, BPF: 39 } as const;
export const BTF_PATH = '/sys/kernel/btf/vmlinux';
/** Where libbpf looks for classic tracepoints' ids. */
const TRACEFS_ROOTS = ['/sys/kernel/tracing', '/sys/kernel/debug/tracing'];

/** Effective capability set of this process, from /proc/self/status. */
export function effectiveCapabilities(statusText = readFileSync('/proc/self/status', 'utf8')): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(statusText);
  return m ? BigInt(`0x${m[1]}`) : 0n;
}

export function hasCap(caps: bigint, cap: number): boolean {
  return (caps & (1n << BigInt(cap))) !== 0n;
}

/** Why BPF tracing programs can't be loaded by this process, or undefined if they can. */
export function privilegeProblem(caps: bigint): string | undefined {
  if (hasCap(caps, CAP.SYS_ADMIN)) return undefined;
  const missing = [];
  if (!hasCap(caps, CAP.BPF)) missing.push('CAP_BPF');
  if (!hasCap(caps, CAP.PERFMON)) missing.push('CAP_PERFMON');
  if (missing.length === 0) return undefined;
  return `missing capability ${missing.join(' and ')} (or CAP_SYS_ADMIN): run as root or grant them, see README "Privileges"`;
}

export function btfProblem(path = BTF_PATH): string | undefined {
  return existsSync(path) ? undefined : `kernel BTF missing (${path}): kerntap needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (5.8+)`;
}

export function hookPresent(native: NativeBinding, hook: Hook): boolean {
  switch (hook.kind) {
    case 'tp_btf':
      return native.btfHasType(`btf_trace_${hook.name}`, 'typedef');
    case 'iter':
      return native.btfHasType(`bpf_iter_${hook.name}`, 'func');
    case 'tracepoint':
      // Classic tracepoints are attached by their tracefs id, as libbpf does.
      return TRACEFS_ROOTS.some((root) => existsSync(`${root}/events/${hook.name}`));
  }
}

export function describeHook(hook: Hook): string {
  return hook.kind === 'iter' ? `iter/${hook.name}` : `${hook.kind}/${hook.name}`;
}

export interface CollectorProbe {
  collector: string;
  enabled: boolean;
  /** Why it is off ('' when on). */
  reason: string;
  hooks: { hook: string; present: boolean }[];
  /** How it runs on this kernel where that differs from the usual (fallbacks). */
  notes?: string[];
}

/**
 * One line on why a collector's programs did not load, naming what the
 * kernel lacks where the verifier or libbpf says: a helper (e.g. socket
 * storage for tracing programs before 5.11), a hook, or a field or type
 * that CO-RE could not find.
 */
export function explainLoadFailure(err: unknown): string {
  const e = err as NativeError;
  const log = e.verifierLog ?? '';
  const program = e.program ? ` (program ${e.program})` : '';
  const helper = missingHelper(err);
  if (helper) return `kernel lacks helper ${helper} for this program type${program}`;
  const relo = /failed to resolve CO-RE relocation.*|<invalid CO-RE relocation>.*/.exec(log)?.[0];
  if (relo) return `kernel lacks a field or type the program reads${program}: ${relo}`;
  return `failed to load: ${e.message.split('\n')[0]}`;
}

/** Probes one collector: config, privileges, BTF, hooks. Loading may still fail later. */
export function probeCollector(
  def: CollectorDefinition,
  configEnabled: boolean,
  native: NativeBinding | undefined,
  globalProblem: string | undefined,
): CollectorProbe {
  const hooks = def.hooks.map((h) => ({
    hook: describeHook(h),
    present: native ? safePresent(native, h) : false,
  }));
  let reason = '';
  if (!configEnabled) reason = `disabled in config (collectors.${def.name}.enabled: false)`;
  else if (globalProblem) reason = globalProblem;
  else {
    const missing = def.hooks.filter((_, i) => !hooks[i]!.present);
    if (missing.length > 0) {
      reason = `kernel lacks ${missing.map((h) => `${describeHook(h)} (since ${h.since})`).join(', ')}`;
    }
  }
  return { collector: def.name, enabled: reason === '', reason, hooks };
}

function safePresent(native: NativeBinding, hook: Hook): boolean {
  try {
    return hookPresent(native, hook);
  } catch {
    return false;
  }
}

/** The table printed by --check and at start. */
export function formatProbeTable(rows: CollectorProbe[]): string {
  const lines: string[] = [];
  const w = Math.max(9, ...rows.map((r) => r.collector.length));
  lines.push(`${'COLLECTOR'.padEnd(w)}  STATE  HOOKS / REASON`);
  for (const r of rows) {
    const hooks = r.hooks.map((h) => `${h.hook}${h.present ? '' : ' (missing)'}`).join(', ');
    lines.push(`${r.collector.padEnd(w)}  ${(r.enabled ? 'on' : 'off').padEnd(5)}  ${hooks}`);
    if (!r.enabled) lines.push(`${''.padEnd(w)}         reason: ${r.reason}`);
    for (const note of r.enabled ? r.notes ?? [] : []) lines.push(`${''.padEnd(w)}         note: ${note}`);
  }
  return lines.join('\n');
}
