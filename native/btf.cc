// BTF: what an object's BTF says about the layouts crossing the kernel
// boundary (map keys and values, globals, enums), for src/bpf/layout.ts; and
// probes of the running kernel's BTF (btfHasType).
#include "kerntap.h"

#include <unistd.h>

#include <cerrno>
#include <mutex>

namespace kerntap {

namespace {

// Nesting kept in a description: a struct in a struct in a map value is
// already deeper than any layout kerntap reads.
constexpr int kMaxDepth = 6;

const char* KindName(const struct btf_type* t) {
  if (btf_is_int(t)) return "int";
  if (btf_is_struct(t)) return "struct";
  if (btf_is_union(t)) return "union";
  if (btf_is_array(t)) return "array";
  if (btf_is_any_enum(t)) return "enum";
  if (btf_is_ptr(t)) return "ptr";
  if (btf_is_float(t)) return "float";
  return "other";
}

const char* Name(const struct btf* btf, __u32 off) {
  const char* n = btf__name_by_offset(btf, off);
  return n ? n : "";
}

Napi::Object EnumValues(Napi::Env env, const struct btf_type* t, const struct btf* btf) {
  Napi::Object values = Napi::Object::New(env);
  if (btf_is_enum(t)) {
    const struct btf_enum* e = btf_enum(t);
    for (int i = 0; i < btf_vlen(t); i++, e++) values.Set(Name(btf, e->name_off), Napi::Number::New(env, e->val));
  } else {
    const struct btf_enum64* e = btf_enum64(t);
    for (int i = 0; i < btf_vlen(t); i++, e++)
      values.Set(Name(btf, e->name_off), Napi::Number::New(env, static_cast<double>(btf_enum64_value(e))));
  }
  return values;
}

// { kind, name, size, members?: [{ name, offset, bits?, type }], length?, elem?, values? }
// with typedefs and qualifiers (const, volatile) looked through.
Napi::Object DescribeType(Napi::Env env, const struct btf* btf, __u32 id, int depth) {
  Napi::Object o = Napi::Object::New(env);
  const struct btf_type* t = btf__type_by_id(btf, id);
  while (t && (btf_is_typedef(t) || btf_is_mod(t))) {
    id = t->type;
    t = btf__type_by_id(btf, id);
  }
  if (!t || id == 0) {  // void
    o.Set("kind", "other");
    o.Set("name", "void");
    o.Set("size", 0);
    return o;
  }
  __s64 size = btf__resolve_size(btf, id);
  o.Set("kind", KindName(t));
  o.Set("name", Name(btf, t->name_off));
  o.Set("size", Napi::Number::New(env, size < 0 ? 0 : static_cast<double>(size)));
  if (depth >= kMaxDepth) return o;
  if (btf_is_composite(t)) {
    Napi::Array members = Napi::Array::New(env);
    const struct btf_member* m = btf_members(t);
    for (int i = 0; i < btf_vlen(t); i++, m++) {
      Napi::Object mo = Napi::Object::New(env);
      mo.Set("name", Name(btf, m->name_off));
      mo.Set("offset", Napi::Number::New(env, btf_member_bit_offset(t, i) / 8));
      __u32 bits = btf_member_bitfield_size(t, i);
      if (bits) mo.Set("bits", Napi::Number::New(env, bits));
      mo.Set("type", DescribeType(env, btf, m->type, depth + 1));
      members.Set(i, mo);
    }
    o.Set("members", members);
  } else if (btf_is_array(t)) {
    const struct btf_array* a = btf_array(t);
    o.Set("length", Napi::Number::New(env, a->nelems));
    o.Set("elem", DescribeType(env, btf, a->type, depth + 1));
  } else if (btf_is_any_enum(t)) {
    o.Set("values", EnumValues(env, t, btf));
  }
  return o;
}

std::mutex g_btf_mutex;
struct btf* g_vmlinux_btf = nullptr;

}  // namespace

// { maps: { name: { key?, value? } }, globals: { name: type }, enums: { name: { ENUMERATOR: value } } }
Napi::Object DescribeObjectBtf(Napi::Env env, struct bpf_object* obj, const std::string& what) {
  const struct btf* btf = bpf_object__btf(obj);
  if (!btf) throw MakeError(env, "ENOENT", what + " has no BTF (build it with clang -g)", ENOENT);
  Napi::Object maps = Napi::Object::New(env);
  struct bpf_map* map;
  bpf_object__for_each_map(map, obj) {
    if (bpf_map__is_internal(map)) continue;
    Napi::Object m = Napi::Object::New(env);
    if (__u32 k = bpf_map__btf_key_type_id(map)) m.Set("key", DescribeType(env, btf, k, 0));
    if (__u32 v = bpf_map__btf_value_type_id(map)) m.Set("value", DescribeType(env, btf, v, 0));
    maps.Set(bpf_map__name(map), m);
  }
  Napi::Object globals = Napi::Object::New(env);
  Napi::Object enums = Napi::Object::New(env);
  for (__u32 id = 1; id < btf__type_cnt(btf); id++) {
    const struct btf_type* t = btf__type_by_id(btf, id);
    if (btf_is_var(t)) {
      const char* name = Name(btf, t->name_off);
      struct bpf_map* m = bpf_object__find_map_by_name(obj, name);
      if (!m || bpf_map__is_internal(m)) globals.Set(name, DescribeType(env, btf, t->type, 0));  // not a map definition
    } else if (btf_is_any_enum(t) && t->name_off) {
      enums.Set(Name(btf, t->name_off), EnumValues(env, t, btf));
    }
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("maps", maps);
  out.Set("globals", globals);
  out.Set("enums", enums);
  return out;
}

// objectBtf(path): the same description, from an object opened but never
// loaded (no privileges needed; tests and tools read layouts this way).
Napi::Value ObjectBtf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = StringArg(info, 0, "objectBtf: path");
  TakePrinted();
  struct bpf_object* obj = bpf_object__open_file(path.c_str(), nullptr);
  if (!obj) {
    int err = errno;
    std::string tail = LogTail(TakePrinted(), 1);
    throw ErrnoError(env, err, "opening " + path + ": " + ErrText(err) + (tail.empty() ? "" : " (" + tail + ")"));
  }
  try {
    Napi::Object out = DescribeObjectBtf(env, obj, Basename(path));
    bpf_object__close(obj);
    return out;
  } catch (...) {
    bpf_object__close(obj);
    throw;
  }
}


Napi::Value BtfHasType(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "btfHasType: name");
  std::string kind = StringArg(info, 1, "btfHasType: kind");
  __u32 k = kind == "typedef" ? BTF_KIND_TYPEDEF
            : kind == "struct" ? BTF_KIND_STRUCT
            : kind == "func"   ? BTF_KIND_FUNC
            : kind == "enum"   ? BTF_KIND_ENUM
                               : 0;
  if (!k) throw MakeError(env, "EINVAL", "btfHasType: unknown BTF kind " + kind + " (typedef, struct, func or enum)", EINVAL);
  std::lock_guard<std::mutex> lock(g_btf_mutex);
  if (!g_vmlinux_btf) {  // loaded once, kept for the life of the process
    if (access(kBtfPath, R_OK) != 0) throw NoKernelBtf(env);
    TakePrinted();
    g_vmlinux_btf = btf__load_vmlinux_btf();
    if (!g_vmlinux_btf) {
      int err = errno;
      std::string tail = LogTail(TakePrinted(), 1);
      throw MakeError(env, "ENOBTF", std::string("cannot load kernel BTF from ") + kBtfPath + ": " + ErrText(err) +
                                         (tail.empty() ? "" : " (" + tail + ")"), err);
    }
  }
  return Napi::Boolean::New(env, btf__find_by_name_kind(g_vmlinux_btf, name.c_str(), k) >= 0);
}

// The parsed kernel BTF is ~7 MB; probing is done once at start.
Napi::Value ReleaseKernelBtf(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(g_btf_mutex);
  btf__free(g_vmlinux_btf);
  g_vmlinux_btf = nullptr;
  return info.Env().Undefined();
}

}  // namespace kerntap
