// Options applied between open and load: map sizes and flags, programs
// not to load, and `const volatile` globals (rodata, placed by the BTF).
#include "kerntap.h"

#include <cstring>

namespace kerntap {

namespace {

// Calls set(name, n) for each entry of opts[key], { mapName: integer >= min }.
template <typename Set>
void ForEachMapOption(Napi::Env env, const Napi::Object& opts, const char* key, double min, const char* want, Set set) {
  Napi::Value v = opts.Get(key);
  if (v.IsUndefined()) return;
  if (!v.IsObject()) throw Napi::TypeError::New(env, std::string(key) + " must be an object");
  Napi::Object m = v.As<Napi::Object>();
  Napi::Array names = m.GetPropertyNames();
  for (uint32_t i = 0; i < names.Length(); i++) {
    std::string name = names.Get(i).ToString();
    Napi::Value n = m.Get(name);
    double d = n.IsNumber() ? n.As<Napi::Number>().DoubleValue() : -1;
    if (d < min || d > UINT32_MAX || d != static_cast<double>(static_cast<uint32_t>(d))) {
      throw Napi::TypeError::New(env, std::string(key) + "." + name + " must be a " + want);
    }
    set(name, static_cast<uint32_t>(d));
  }
}

}  // namespace

void BpfObject::ApplyOptions(Napi::Env env, const Napi::Object& opts) {
  ForEachMapOption(env, opts, "maxEntries", 1, "positive integer", [&](const std::string& name, uint32_t n) {
    int rc = bpf_map__set_max_entries(FindMap(env, name), n);
    if (rc != 0) throw ErrnoError(env, -rc, what_ + ": cannot set max_entries of map " + name + ": " + ErrText(-rc));
  });
  ForEachMapOption(env, opts, "mapFlags", 0, "non-negative integer", [&](const std::string& name, uint32_t n) {
    int rc = bpf_map__set_map_flags(FindMap(env, name), n);
    if (rc != 0) throw ErrnoError(env, -rc, what_ + ": cannot set flags of map " + name + ": " + ErrText(-rc));
  });
  Napi::Value v = opts.Get("skipPrograms");
  if (!v.IsUndefined()) {
    if (!v.IsArray()) throw Napi::TypeError::New(env, "skipPrograms must be an array of program names");
    Napi::Array skip = v.As<Napi::Array>();
    for (uint32_t i = 0; i < skip.Length(); i++) {
      std::string name = skip.Get(i).ToString();
      struct bpf_program* prog = bpf_object__find_program_by_name(obj_, name.c_str());
      if (!prog) throw MakeError(env, "ENOENT", what_ + ": no program named " + name, ENOENT);
      bpf_program__set_autoload(prog, false);
    }
  }
  v = opts.Get("rodata");
  if (!v.IsUndefined()) {
    if (!v.IsObject()) throw Napi::TypeError::New(env, "rodata must be an object");
    SetRodata(env, v.As<Napi::Object>());
  }
}


// Writes `const volatile` globals into the .rodata image before load. The
// variable's offset and size come from the object's BTF (DATASEC .rodata).
void BpfObject::SetRodata(Napi::Env env, const Napi::Object& values) {
  Napi::Array names = values.GetPropertyNames();
  if (names.Length() == 0) return;
  struct bpf_map* rodata = bpf_object__find_map_by_name(obj_, ".rodata");
  const struct btf* btf = bpf_object__btf(obj_);
  int sec_id = btf ? btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC) : -1;
  size_t size = 0;
  const void* initial = rodata ? bpf_map__initial_value(rodata, &size) : nullptr;
  if (!initial || sec_id < 0) {
    std::string first = names.Get(0u).ToString();
    throw MakeError(env, "ENOENT", what_ + ": no const volatile variable named " + first + " (the object has no .rodata)", ENOENT);
  }
  std::vector<uint8_t> image(static_cast<const uint8_t*>(initial), static_cast<const uint8_t*>(initial) + size);
  const struct btf_type* sec = btf__type_by_id(btf, sec_id);
  for (uint32_t i = 0; i < names.Length(); i++) {
    std::string name = names.Get(i).ToString();
    const struct btf_var_secinfo* vs = btf_var_secinfos(sec);
    const struct btf_var_secinfo* found = nullptr;
    for (int k = 0; k < btf_vlen(sec); k++, vs++) {
      const struct btf_type* var = btf__type_by_id(btf, vs->type);
      const char* var_name = var ? btf__name_by_offset(btf, var->name_off) : nullptr;
      if (var_name && name == var_name) {
        found = vs;
        break;
      }
    }
    if (!found) throw MakeError(env, "ENOENT", what_ + ": no const volatile variable named " + name, ENOENT);
    auto bytes = Bytes(env, values.Get(name), ("rodata." + name).c_str());
    if (bytes.second != found->size || static_cast<size_t>(found->offset) + found->size > size) {
      throw MakeError(env, "EINVAL", what_ + ": rodata " + name + " is " + std::to_string(found->size) + " bytes, got " +
                                         std::to_string(bytes.second), EINVAL);
    }
    memcpy(image.data() + found->offset, bytes.first, found->size);
  }
  int rc = bpf_map__set_initial_value(rodata, image.data(), image.size());
  if (rc != 0) throw ErrnoError(env, -rc, what_ + ": cannot set .rodata: " + ErrText(-rc));
}

}  // namespace kerntap
