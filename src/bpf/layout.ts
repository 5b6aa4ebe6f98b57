/**
 * Layouts of what crosses the kernel boundary (map keys and values, iterator
 * records, enums), taken from the BPF object's own BTF instead of being
 * written down a second time in TypeScript.
 *
 * A collector says which members it reads and the size it expects of each;
 * `structLayout()` checks that once, at load, and returns their offsets. A
 * member that is missing or has another size is one LayoutError naming the
 * collector, the map (or global) and the member, never a silent misread.
 * Decoding then reads at the offsets found, as fast as constant offsets.
 */

/** A BTF type as the addon describes it (typedefs and qualifiers looked through). */
export interface BtfType {
  kind: 'int' | 'struct' | 'union' | 'array' | 'enum' | 'ptr' | 'float' | 'other';
  name: string;
  size: number;
  members?: BtfMember[];
  /** Arrays: element count and type. */
  length?: number;
  elem?: BtfType;
  /** Enums: enumerator -> value. */
  values?: Record<string, number>;
}

export interface BtfMember {
  name: string;
  /** Byte offset in the enclosing struct. */
  offset: number;
  /** Bitfields only: width in bits. */
  bits?: number;
  type: BtfType;
}

/** What an object's BTF says (BpfObjectHandle.btf(), NativeBinding.objectBtf()). */
export interface ObjectBtf {
  maps: Record<string, { key?: BtfType; value?: BtfType }>;
  /** Global variables (rodata, data, bss) by name. */
  globals: Record<string, BtfType>;
  /** Named enums: enumerator -> value. */
  enums: Record<string, Record<string, number>>;
}

export class LayoutError extends Error {
  override name = 'LayoutError';
}

/**
 * Expected member: its size in bytes, or for an array its element size
 * (and element count, when the collector depends on it).
 */
export type MemberSpec = number | { elem: number; length?: number };

export interface Layout<M extends string> {
  /** "struct flow_key", for messages. */
  readonly type: string;
  readonly size: number;
  /** Byte offset of each member. */
  readonly offset: Readonly<Record<M, number>>;
  /** Size in bytes of each member (arrays: the whole array). */
  readonly sizeOf: Readonly<Record<M, number>>;
  /** Element size of each member (its size for a scalar). */
  readonly elemSize: Readonly<Record<M, number>>;
  /** Array members: their element count (1 for scalars). */
  readonly length: Readonly<Record<M, number>>;
}

/** Where a layout is read, for the error: "collector tcp: map flows key". */
export interface LayoutSite {
  collector: string;
  /** The object file, e.g. "tcp.bpf.o". */
  object: string;
}

function typeName(t: BtfType): string {
  return t.kind === 'struct' || t.kind === 'union' ? `${t.kind} ${t.name || '(anonymous)'}` : t.name || t.kind;
}

/** The layout of type t, checked against spec; `where` names it in the error. */
export function layoutOf<M extends string>(where: string, t: BtfType, spec: Record<M, MemberSpec>): Layout<M> {
  const fail = (why: string) => new LayoutError(`${where} (${typeName(t)}): ${why}`);
  const offset = {} as Record<M, number>;
  const sizeOf = {} as Record<M, number>;
  const elemSize = {} as Record<M, number>;
  const length = {} as Record<M, number>;
  for (const name of Object.keys(spec) as M[]) {
    const want = spec[name];
    const m = t.members?.find((x) => x.name === name);
    if (!m) throw fail(`no member ${name}`);
    if (m.bits !== undefined) throw fail(`member ${name} is a bitfield`);
    const isArray = m.type.kind === 'array';
    const elem = isArray ? (m.type.elem?.size ?? 0) : m.type.size;
    const count = isArray ? (m.type.length ?? 0) : 1;
    if (typeof want === 'number') {
      if (m.type.size !== want) throw fail(`member ${name} is ${m.type.size} bytes, expected ${want}`);
    } else {
      if (!isArray || elem !== want.elem) throw fail(`member ${name} is not an array of ${want.elem}-byte elements`);
      if (want.length !== undefined && count !== want.length) throw fail(`member ${name} has ${count} elements, expected ${want.length}`);
    }
    offset[name] = m.offset;
    sizeOf[name] = m.type.size;
    elemSize[name] = elem;
    length[name] = count;
  }
  return { type: typeName(t), size: t.size, offset, sizeOf, elemSize, length };
}

/** The layout of a map's key or value, checked against what the collector reads. */
export function mapLayout<M extends string>(btf: ObjectBtf, site: LayoutSite, map: string, part: 'key' | 'value', spec: Record<M, MemberSpec>): Layout<M> {
  const where = `collector ${site.collector}: map ${map} ${part} in ${site.object}`;
  const t = btf.maps[map]?.[part];
  if (!t) throw new LayoutError(`${where}: ${btf.maps[map] ? `no BTF type for the ${part}` : 'no such map'}`);
  return layoutOf(where, t, spec);
}

/** The layout of a member of a global variable (types no map names, e.g. iterator records in kt_layouts). */
export function globalLayout<M extends string>(btf: ObjectBtf, site: LayoutSite, global: string, member: string, spec: Record<M, MemberSpec>): Layout<M> {
  const where = `collector ${site.collector}: ${global}.${member} in ${site.object}`;
  const t = btf.globals[global]?.members?.find((m) => m.name === member)?.type;
  if (!t) throw new LayoutError(`${where}: no such ${btf.globals[global] ? 'member' : 'global variable'}`);
  return layoutOf(where, t, spec);
}

/** Checks that a map's key or value is a plain integer of `size` bytes (e.g. a u64 cgroup id). */
export function checkScalar(btf: ObjectBtf, site: LayoutSite, map: string, part: 'key' | 'value', size: number): void {
  const where = `collector ${site.collector}: map ${map} ${part} in ${site.object}`;
  const t = btf.maps[map]?.[part];
  if (!t) throw new LayoutError(`${where}: ${btf.maps[map] ? `no BTF type for the ${part}` : 'no such map'}`);
  if ((t.kind !== 'int' && t.kind !== 'enum') || t.size !== size) throw new LayoutError(`${where}: is ${typeName(t)} (${t.size} bytes), expected a ${size}-byte integer`);
}

/**
 * The values of the named enumerators of a C enum, e.g.
 * enumValues(btf, site, 'failure', ['FAIL_REFUSED', ...]). Each must exist;
 * with `exhaustive`, the enum may have no others (except those in `ignore`),
 * so a value the kernel side adds cannot go undecoded.
 */
export function enumValues<N extends string>(btf: ObjectBtf, site: LayoutSite, name: string, names: readonly N[], opts: { exhaustive?: boolean; ignore?: readonly string[] } = {}): Record<N, number> {
  const where = `collector ${site.collector}: enum ${name} in ${site.object}`;
  const values = btf.enums[name];
  if (!values) throw new LayoutError(`${where}: not in the object's BTF (a type no map or global uses is left out)`);
  const out = {} as Record<N, number>;
  for (const n of names) {
    const v = values[n];
    if (v === undefined) throw new LayoutError(`${where}: no enumerator ${n}`);
    out[n] = v;
  }
  if (opts.exhaustive) {
    const unknown = Object.keys(values).filter((n) => !(names as readonly string[]).includes(n) && !opts.ignore?.includes(n));
    if (unknown.length) throw new LayoutError(`${where}: enumerator ${unknown.join(', ')} unknown to the collector`);
  }
  return out;
}

/** Member values for encode(): integers, bigints (8-byte members), byte strings, or arrays of integers. */
export type MemberValue = number | bigint | Buffer | readonly (number | bigint)[];

function writeInt(buf: Buffer, off: number, size: number, v: number | bigint): void {
  if (size === 8) buf.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)), off);
  else buf.writeUIntLE(Number(v), off, size);
}

/** Lays out values in a zeroed buffer of the type's size (fixtures, reserved keys, values written back). */
export function encode<M extends string>(layout: Layout<M>, values: Partial<Record<M, MemberValue>>): Buffer {
  const buf = Buffer.alloc(layout.size);
  for (const name of Object.keys(values) as M[]) {
    const v = values[name];
    if (v === undefined) continue;
    const off = layout.offset[name];
    if (Buffer.isBuffer(v)) v.subarray(0, layout.sizeOf[name]).copy(buf, off);
    else if (Array.isArray(v)) v.slice(0, layout.length[name]).forEach((x, i) => writeInt(buf, off + i * layout.elemSize[name], layout.elemSize[name], x));
    else writeInt(buf, off, layout.sizeOf[name], v as number | bigint);
  }
  return buf;
}

/**
 * For values read as u64 words (MapBatch.values: per-CPU sums are per
 * word): the word index of each member, which must be whole u64 words.
 */
export function wordIndex<M extends string>(layout: Layout<M>, where: LayoutSite & { map: string }): Readonly<Record<M, number>> {
  const out = {} as Record<M, number>;
  for (const name of Object.keys(layout.offset) as M[]) {
    if (layout.offset[name] % 8 !== 0 || layout.elemSize[name] !== 8) {
      throw new LayoutError(`collector ${where.collector}: map ${where.map} value in ${where.object} (${layout.type}): member ${name} is not made of u64 words`);
    }
    out[name] = layout.offset[name] / 8;
  }
  if (layout.size % 8 !== 0) throw new LayoutError(`collector ${where.collector}: map ${where.map} value in ${where.object} (${layout.type}) is ${layout.size} bytes, not whole u64 words`);
  return out;
}

/** A buffer's u64 words, as MapBatch.values holds a value. */
export function toWords(buf: Buffer): bigint[] {
  const out: bigint[] = [];
  for (let off = 0; off + 8 <= buf.length; off += 8) out.push(buf.readBigUInt64LE(off));
  return out;
}
