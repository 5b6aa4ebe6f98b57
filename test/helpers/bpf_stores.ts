/**
 * Finds plain (non-atomic) writes into BPF map values in compiled BPF
 * objects, from their disassembly (llvm-objdump-19 -dr).
 *
 * A value shared by all CPUs (and, on one CPU, by process context and a
 * softirq that interrupts it) must be updated with atomic instructions
 * (`lock *(u64 *)(rX + off) += rY`). A plain `++` or `+=` compiles to a
 * load, an add and a store: two updates that overlap lose one of them. So
 * every store into such a value is a lost-update bug, whatever it stores.
 *
 * The analysis follows each program's control flow and tracks, per
 * register and per stack slot, which maps' values it may point into: a map
 * address (ld_imm64 relocated to a map), the value that a lookup helper
 * returns for it, pointer arithmetic, copies, spills and fills. It errs on
 * the side of "may point": a false alarm names the instruction, a miss would
 * be silent. Forms it does not know (such as BPF-to-BPF calls) are refused.
 */
import { execFileSync } from 'node:child_process';

/** Helpers that return a pointer into a value of the map passed in r1. */
const LOOKUP_HELPERS = new Set([1 /* map_lookup_elem */, 107 /* sk_storage_get */, 195 /* map_lookup_percpu_elem */]);
/** Helpers that write through their first argument. */
const WRITE_HELPERS = new Set([4, 16, 45, 112, 113, 114, 115]); // probe_read*, get_current_comm

export interface PlainStore {
  map: string;
  program: string;
  index: number;
  insn: string;
}

interface Insn {
  index: number;
  text: string;
  reloc?: string;
}

type Tags = Set<string>;

interface State {
  regs: Tags[];
  stack: Map<number, Tags>;
}

function objdump(args: string[], obj: string): string {
  return execFileSync('llvm-objdump-19', [...args, obj], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
}

/** Symbol name -> section, from the symbol table. */
function symbolSections(obj: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of objdump(['-t'], obj).split('\n')) {
    const m = /^[0-9a-f]{16} .{7} (\S+)\s+[0-9a-f]{16} (\S+)$/.exec(line);
    if (m) out.set(m[2]!, m[1]!);
  }
  return out;
}

/** The maps an object defines (its .maps section). */
export function mapsOf(obj: string): string[] {
  return [...symbolSections(obj)].filter(([, section]) => section === '.maps').map(([name]) => name).sort();
}

/** Each function's instructions (indices count from its section's start) and its first index. */
function programs(obj: string): Map<string, { base: number; insns: Insn[] }> {
  const progs = new Map<string, { base: number; insns: Insn[] }>();
  let current: Insn[] | undefined;
  for (const line of objdump(['-dr', '--no-show-raw-insn'], obj).split('\n')) {
    const head = /^([0-9a-f]{16}) <(.+)>:$/.exec(line);
    if (head) {
      current = [];
      progs.set(head[2]!, { base: parseInt(head[1]!, 16) / 8, insns: current });
      continue;
    }
    const insn = /^\s+(\d+):\t(.+)$/.exec(line);
    if (insn && current) {
      current.push({ index: Number(insn[1]), text: insn[2]!.trim() });
      continue;
    }
    const reloc = /^\s+[0-9a-f]+:\s+(R_BPF_\S+)\s+(\S+)/.exec(line);
    if (reloc && current?.length) {
      if (reloc[1] !== 'R_BPF_64_64') throw new Error(`${obj}: relocation ${reloc[1]} (a call or a jump to another function?) is not analysed: ${line.trim()}`);
      current[current.length - 1]!.reloc = reloc[2]!;
    }
  }
  return progs;
}

const union = (a: Tags, b: Tags): Tags => (b.size === 0 ? a : a.size === 0 ? b : new Set([...a, ...b]));
const EMPTY: Tags = new Set();

function copyState(s: State): State {
  return { regs: [...s.regs], stack: new Map(s.stack) };
}

/** Merges `from` into `into`; true if `into` grew. */
function join(into: State, from: State): boolean {
  let grew = false;
  const merge = (a: Tags, b: Tags): Tags => {
    const u = union(a, b);
    if (u.size !== a.size) grew = true;
    return u;
  };
  into.regs = into.regs.map((t, i) => merge(t, from.regs[i]!));
  for (const [off, t] of from.stack) into.stack.set(off, merge(into.stack.get(off) ?? EMPTY, t));
  return grew;
}

const reg = (s: string): number => Number(s.slice(1));
const num = (s: string): number => (s.startsWith('-') ? -Number(s.slice(1)) : Number(s));

/** Every plain store into a value of a map not in `exempt`, in one object. */
export function plainStores(obj: string, exempt: ReadonlySet<string>): PlainStore[] {
  const sections = symbolSections(obj);
  const found = new Map<string, PlainStore>();
  for (const [program, { base: first, insns }] of programs(obj)) {
    const at = new Map(insns.map((x, i) => [x.index, i]));
    const states: (State | undefined)[] = insns.map(() => undefined);
    states[0] = { regs: Array.from({ length: 11 }, (_, i) => (i === 10 ? new Set(['fp']) : EMPTY)), stack: new Map() };
    const work = [0];
    const flag = (s: State, base: number, insn: Insn) => {
      for (const tag of s.regs[base]!) {
        const map = tag.startsWith('val:') ? tag.slice(4) : undefined;
        if (map && !exempt.has(map)) found.set(`${program}:${insn.index}:${map}`, { map, program, index: insn.index, insn: insn.text });
      }
    };
    const target = (insn: Insn): number => {
      const m = /<[^>+]+\+0x([0-9a-f]+)>$/.exec(insn.text) ?? /<[^>+]+>$/.exec(insn.text);
      if (!m) throw new Error(`${obj}: no jump target in "${insn.text}"`);
      // <function+byte offset>
      const i = at.get(first + (m[1] ? parseInt(m[1], 16) / 8 : 0));
      if (i === undefined) throw new Error(`${obj}: jump outside ${program}: "${insn.text}"`);
      return i;
    };
    while (work.length > 0) {
      const i = work.pop()!;
      const insn = insns[i]!;
      const s = copyState(states[i]!);
      const t = insn.text;
      let next: number[] = [i + 1];
      let m: RegExpExecArray | null;
      if (t === 'exit') {
        next = [];
      } else if ((m = /^goto [+-]?0x[0-9a-f]+ /.exec(t))) {
        next = [target(insn)];
      } else if (/^if [rw]\d+ \S+ \S+ goto /.test(t)) {
        next = [i + 1, target(insn)];
      } else if ((m = /^call (0x[0-9a-f]+|\d+)$/.exec(t))) {
        const helper = Number(m[1]);
        if (WRITE_HELPERS.has(helper)) flag(s, 1, insn);
        let r0: Tags = EMPTY;
        if (LOOKUP_HELPERS.has(helper)) r0 = new Set([...s.regs[1]!].filter((x) => x.startsWith('map:')).map((x) => `val:${x.slice(4)}`));
        for (let r = 0; r <= 5; r++) s.regs[r] = EMPTY;
        s.regs[0] = r0;
      } else if (/^call /.test(t)) {
        throw new Error(`${obj}: ${program}: "${t}" (a BPF-to-BPF call) is not analysed`);
      } else if (/^lock \*\(u\d+ \*\)\([rw]\d+ [+-] \S+\) \S+= [rw]\d+$/.test(t)) {
        // atomic add/and/or/xor: the one allowed write
      } else if ((m = /^([rw]\d+) = (atomic_fetch_\w+|xchg|cmpxchg|xchg_64|cmpxchg_64)\(/.exec(t))) {
        s.regs[reg(m[1]!)] = EMPTY;
        if (m[2]!.startsWith('cmpxchg')) s.regs[0] = EMPTY;
      } else if ((m = /^\*\(u\d+ \*\)\(([rw]\d+) ([+-]) (0x[0-9a-f]+|\d+)\) = (\S+)$/.exec(t))) {
        const base = reg(m[1]!);
        const src = /^[rw]\d+$/.test(m[4]!) ? s.regs[reg(m[4]!)]! : EMPTY;
        if (base === 10) s.stack.set(num(`${m[2] === '-' ? '-' : ''}${m[3]}`), src);
        else flag(s, base, insn);
      } else if ((m = /^([rw]\d+) = \*\(u\d+ \*\)\(([rw]\d+) ([+-]) (0x[0-9a-f]+|\d+)\)$/.exec(t))) {
        const base = reg(m[2]!);
        s.regs[reg(m[1]!)] = base === 10 ? s.stack.get(num(`${m[3] === '-' ? '-' : ''}${m[4]}`)) ?? EMPTY : EMPTY;
      } else if ((m = /^([rw]\d+) = \S+ ll$/.exec(t))) {
        const sym = insn.reloc;
        const section = sym ? sections.get(sym) ?? sym : undefined;
        let tags: Tags = EMPTY;
        if (section === '.maps') tags = new Set([`map:${sym}`]);
        // Global variables live in the value of an array map per section.
        else if (section && /^\.(bss|data)/.test(section)) tags = new Set([`val:${section}`]);
        s.regs[reg(m[1]!)] = tags;
        next = [i + 1];
      } else if ((m = /^([rw]\d+) = ([rw]\d+)$/.exec(t))) {
        s.regs[reg(m[1]!)] = s.regs[reg(m[2]!)]!;
      } else if ((m = /^([rw]\d+) = -?(0x[0-9a-f]+|\d+)$/.exec(t))) {
        s.regs[reg(m[1]!)] = EMPTY;
      } else if ((m = /^([rw]\d+) (s?[-+*/%&|^]|s?<<|s?>>|s>>)= (\S+)$/.exec(t))) {
        const src = /^[rw]\d+$/.test(m[3]!) ? s.regs[reg(m[3]!)]! : EMPTY;
        s.regs[reg(m[1]!)] = union(s.regs[reg(m[1]!)]!, src);
      } else if ((m = /^([rw]\d+) = (.+)$/.exec(t))) {
        // be16/bswap/neg/sign-extending moves: whatever registers they read
        let tags: Tags = EMPTY;
        for (const r of m[2]!.match(/\b[rw]\d+\b/g) ?? []) tags = union(tags, s.regs[reg(r)]!);
        s.regs[reg(m[1]!)] = tags;
      } else {
        throw new Error(`${obj}: ${program}: instruction "${t}" is not analysed`);
      }
      for (const n of next) {
        if (n >= insns.length) throw new Error(`${obj}: ${program} falls off its end after "${t}"`);
        if (!states[n]) {
          states[n] = copyState(s);
          work.push(n);
        } else if (join(states[n]!, s)) {
          work.push(n);
        }
      }
    }
  }
  return [...found.values()];
}
