// kerntap native addon: a thin layer over libbpf.
//
// It opens, loads and attaches BPF objects, reads maps in batches (summing
// per-CPU copies), runs iterators and reports program stats. Reads and
// iterators run on the libuv thread pool, never on the event loop. Every
// policy decision (what to load, labels, limits) lives in TypeScript; see
// src/bpf/native.ts for the contract.
#include <napi.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

const char kBtfPath[] = "/sys/kernel/btf/vmlinux";
constexpr size_t kLogKeep = 16 * 1024;

// libbpf reports through a process-wide callback. Loads happen on the JS
// thread only, so one buffer guarded by a mutex is enough.
std::mutex g_log_mutex;
std::string g_log;

int LibbpfPrint(enum libbpf_print_level level, const char* fmt, va_list args) {
  va_list copy;
  va_copy(copy, args);
  if (std::getenv("KERNTAP_LIBBPF_DEBUG")) vfprintf(stderr, fmt, copy);
  va_end(copy);
  if (level == LIBBPF_DEBUG) return 0;
  char buf[2048];
  vsnprintf(buf, sizeof buf, fmt, args);
  std::lock_guard<std::mutex> lock(g_log_mutex);
  g_log += buf;
  if (g_log.size() > 4 * kLogKeep) g_log.erase(0, g_log.size() - 2 * kLogKeep);
  return 0;
}

std::string TakeLog() {
  std::lock_guard<std::mutex> lock(g_log_mutex);
  std::string out;
  out.swap(g_log);
  return out;
}

// The verifier log libbpf prints between its BEGIN/END markers, and the
// program it belongs to.
struct VerifierReport {
  std::string program;
  std::string log;
};

VerifierReport ExtractVerifierLog(const std::string& log) {
  VerifierReport r;
  const std::string begin = "-- BEGIN PROG LOAD LOG --";
  const std::string end = "-- END PROG LOAD LOG --";
  size_t b = log.find(begin);
  if (b == std::string::npos) return r;
  size_t name_end = log.rfind("':", b);
  size_t name_start = name_end == std::string::npos ? std::string::npos : log.rfind("prog '", name_end);
  if (name_start != std::string::npos) r.program = log.substr(name_start + 6, name_end - name_start - 6);
  size_t start = log.find('\n', b);
  size_t stop = log.find(end, b);
  if (start == std::string::npos || stop == std::string::npos || stop < start) return r;
  r.log = log.substr(start + 1, stop - start - 1);
  // libbpf prefixes the END marker with "libbpf: prog 'x': "; drop that tail line.
  size_t last_nl = r.log.rfind('\n');
  if (last_nl != std::string::npos && r.log.find("libbpf:", last_nl) != std::string::npos) r.log.erase(last_nl + 1);
  if (r.log.size() > 4096) r.log = r.log.substr(r.log.size() - 4096);
  return r;
}

// The last meaningful lines of a verifier log, for a one-line message.
std::string LogTail(const std::string& log, int lines) {
  std::vector<std::string> kept;
  size_t pos = log.size();
  while (pos > 0 && static_cast<int>(kept.size()) < lines) {
    size_t nl = log.rfind('\n', pos - 1);
    size_t from = nl == std::string::npos ? 0 : nl + 1;
    std::string line = log.substr(from, pos - from);
    if (!line.empty() && line.find("processed ") != 0 && line.find("verification time") != 0 &&
        line.find("stack depth") != 0) {
      kept.insert(kept.begin(), line);
    }
    if (nl == std::string::npos) break;
    pos = nl;
  }
  std::string out;
  for (auto& l : kept) out += (out.empty() ? "" : " | ") + l;
  return out;
}

std::string ErrnoName(int err) {
  switch (err) {
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOENT: return "ENOENT";
    case EINVAL: return "EINVAL";
    case E2BIG: return "E2BIG";
    case ENOMEM: return "ENOMEM";
    case EBUSY: return "EBUSY";
    case ENOSPC: return "ENOSPC";
    case EBADF: return "EBADF";
    case ENOTSUP: return "ENOTSUP";
    default: return "E" + std::to_string(err);
  }
}

Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message, int err = 0) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  if (err) e.Set("errno", Napi::Number::New(env, err));
  return e;
}

Napi::Error PermissionError(Napi::Env env, const std::string& what, int err) {
  Napi::Error e = MakeError(env, ErrnoName(err),
                            what + ": permission denied: needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)", err);
  e.Set("capability", Napi::String::New(env, "CAP_BPF"));
  return e;
}

size_t RoundUp8(size_t n) { return (n + 7) & ~static_cast<size_t>(7); }

bool IsPerCpu(enum bpf_map_type t) {
  return t == BPF_MAP_TYPE_PERCPU_HASH || t == BPF_MAP_TYPE_PERCPU_ARRAY || t == BPF_MAP_TYPE_LRU_PERCPU_HASH ||
         t == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

// Result of a whole-map read, filled on a worker thread.
struct MapRead {
  size_t key_size = 0;
  size_t value_words = 0;
  size_t count = 0;
  std::vector<uint8_t> keys;
  std::vector<uint64_t> values;
};

// Reads every element of a map: lookup_batch in chunks, or get_next_key when
// the map type has no batch support. Per-CPU values are summed per u64 word.
// Returns 0 or -errno.
int ReadWholeMap(int fd, size_t key_size, size_t value_size, bool percpu, int ncpu, MapRead* out) {
  if (value_size % 8 != 0) return -EINVAL;
  const size_t words = value_size / 8;
  const size_t stride = percpu ? RoundUp8(value_size) * ncpu : value_size;
  out->key_size = key_size;
  out->value_words = words;

  auto append = [&](const uint8_t* keys, const uint8_t* vals, size_t n) {
    out->keys.insert(out->keys.end(), keys, keys + n * key_size);
    size_t base = out->values.size();
    out->values.resize(base + n * words, 0);
    for (size_t i = 0; i < n; i++) {
      const uint8_t* v = vals + i * stride;
      uint64_t* dst = &out->values[base + i * words];
      int copies = percpu ? ncpu : 1;
      size_t cpu_stride = percpu ? RoundUp8(value_size) : 0;
      for (int c = 0; c < copies; c++) {
        const uint64_t* src = reinterpret_cast<const uint64_t*>(v + c * cpu_stride);
        for (size_t w = 0; w < words; w++) dst[w] += src[w];
      }
    }
    out->count += n;
  };

  uint32_t chunk = 4096;
  std::vector<uint8_t> keys, vals;
  std::vector<uint8_t> in_batch(std::max<size_t>(key_size, 8)), out_batch(std::max<size_t>(key_size, 8));
  bool first = true;
  for (;;) {
    keys.resize(static_cast<size_t>(chunk) * key_size);
    vals.resize(static_cast<size_t>(chunk) * stride);
    uint32_t n = chunk;
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    int rc = bpf_map_lookup_batch(fd, first ? nullptr : in_batch.data(), out_batch.data(), keys.data(), vals.data(),
                                  &n, &opts);
    int err = rc < 0 ? errno : 0;
    if (rc < 0 && err == ENOSPC && n == 0) {  // a hash bucket larger than the chunk
      chunk *= 2;
      continue;
    }
    if (rc < 0 && err != ENOENT) {
      if (first && (err == EINVAL || err == ENOTSUP || err == EOPNOTSUPP)) break;  // no batch ops: fall back
      return -err;
    }
    append(keys.data(), vals.data(), n);
    if (rc < 0) return 0;  // ENOENT: that was the last batch
    first = false;
    in_batch = out_batch;
  }

  // Fallback: one key at a time.
  std::vector<uint8_t> key(key_size), next(key_size), val(stride);
  bool have = false;
  while (bpf_map_get_next_key(fd, have ? key.data() : nullptr, next.data()) == 0) {
    if (bpf_map_lookup_elem(fd, next.data(), val.data()) == 0) append(next.data(), val.data(), 1);
    key = next;
    have = true;
  }
  return errno == ENOENT ? 0 : -errno;
}

class BpfObject;

// Keeps the JS object alive and its fds open while a worker uses them.
class Inflight {
 public:
  explicit Inflight(BpfObject* obj);
  ~Inflight();

 private:
  BpfObject* obj_;
};

class BpfObject : public Napi::ObjectWrap<BpfObject> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit BpfObject(const Napi::CallbackInfo& info);
  ~BpfObject() override { Destroy(); }

  void Acquire() { inflight_++; }
  void Release() {
    if (--inflight_ == 0 && close_requested_) Destroy();
  }
  int ncpu() const { return ncpu_; }

 private:
  Napi::Value Attach(const Napi::CallbackInfo& info);
  Napi::Value Programs(const Napi::CallbackInfo& info);
  Napi::Value Maps(const Napi::CallbackInfo& info);
  Napi::Value ReadMap(const Napi::CallbackInfo& info);
  Napi::Value RunIter(const Napi::CallbackInfo& info);
  Napi::Value UpdateElem(const Napi::CallbackInfo& info);
  Napi::Value DeleteKeys(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  struct bpf_map* FindMap(Napi::Env env, const std::string& name);
  void CheckOpen(Napi::Env env);
  void Destroy();

  struct bpf_object* obj_ = nullptr;
  std::string path_;
  std::vector<struct bpf_link*> links_;
  std::map<std::string, struct bpf_link*> iter_links_;
  int ncpu_ = 1;
  int inflight_ = 0;
  bool close_requested_ = false;
};

Inflight::Inflight(BpfObject* obj) : obj_(obj) {
  obj_->Acquire();
  obj_->Ref();
}
Inflight::~Inflight() {
  obj_->Release();
  obj_->Unref();
}

std::string Basename(const std::string& p) {
  size_t s = p.rfind('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

BpfObject::BpfObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfObject>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "BpfObject(path, options?)");
  path_ = info[0].As<Napi::String>();
  Napi::Object opts = info.Length() > 1 && info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
  const std::string what = "loading " + Basename(path_);
  ncpu_ = libbpf_num_possible_cpus();
  if (ncpu_ < 1) ncpu_ = 1;

  if (access(path_.c_str(), R_OK) != 0) throw MakeError(env, "ENOENT", "BPF object " + path_ + " not found (run `npm run build`)", ENOENT);
  if (access(kBtfPath, R_OK) != 0) {
    throw MakeError(env, "ENOBTF", std::string("kernel BTF missing (") + kBtfPath +
                                       "): kerntap needs a kernel built with CONFIG_DEBUG_INFO_BTF=y");
  }

  TakeLog();
  obj_ = bpf_object__open_file(path_.c_str(), nullptr);
  if (!obj_) {
    int err = errno;
    std::string log = TakeLog();
    throw MakeError(env, ErrnoName(err), what + ": cannot open: " + strerror(err) + (log.empty() ? "" : " (" + LogTail(log, 1) + ")"), err);
  }

  try {
    if (opts.Has("maxEntries") && opts.Get("maxEntries").IsObject()) {
      Napi::Object m = opts.Get("maxEntries").As<Napi::Object>();
      Napi::Array names = m.GetPropertyNames();
      for (uint32_t i = 0; i < names.Length(); i++) {
        std::string name = names.Get(i).As<Napi::String>();
        struct bpf_map* map = FindMap(env, name);
        uint32_t n = m.Get(name).As<Napi::Number>().Uint32Value();
        if (bpf_map__set_max_entries(map, n) != 0) throw MakeError(env, "EINVAL", what + ": cannot size map " + name);
      }
    }
    if (opts.Has("skipPrograms") && opts.Get("skipPrograms").IsArray()) {
      Napi::Array skip = opts.Get("skipPrograms").As<Napi::Array>();
      for (uint32_t i = 0; i < skip.Length(); i++) {
        std::string name = skip.Get(i).As<Napi::String>();
        struct bpf_program* prog = bpf_object__find_program_by_name(obj_, name.c_str());
        if (!prog) throw MakeError(env, "ENOENT", what + ": no program named " + name);
        bpf_program__set_autoload(prog, false);
      }
    }
    if (opts.Has("rodata") && opts.Get("rodata").IsObject()) {
      Napi::Object ro = opts.Get("rodata").As<Napi::Object>();
      Napi::Array names = ro.GetPropertyNames();
      struct bpf_map* rodata = bpf_object__find_map_by_name(obj_, ".rodata");
      const struct btf* btf = bpf_object__btf(obj_);
      int sec_id = btf ? btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC) : -1;
      size_t size = 0;
      const void* initial = rodata ? bpf_map__initial_value(rodata, &size) : nullptr;
      // Edited in a copy, then installed with bpf_map__set_initial_value().
      std::vector<uint8_t> image(static_cast<const uint8_t*>(initial), static_cast<const uint8_t*>(initial) + (initial ? size : 0));
      uint8_t* data = initial ? image.data() : nullptr;
      for (uint32_t i = 0; i < names.Length(); i++) {
        std::string name = names.Get(i).As<Napi::String>();
        if (!data || sec_id < 0) throw MakeError(env, "ENOENT", what + ": no .rodata section for " + name);
        const struct btf_type* sec = btf__type_by_id(btf, sec_id);
        const struct btf_var_secinfo* vs = btf_var_secinfos(sec);
        bool found = false;
        for (int v = 0; v < btf_vlen(sec); v++, vs++) {
          const struct btf_type* var = btf__type_by_id(btf, vs->type);
          if (name != btf__name_by_offset(btf, var->name_off)) continue;
          Napi::Buffer<uint8_t> value = ro.Get(name).As<Napi::Buffer<uint8_t>>();
          if (value.Length() != vs->size || vs->offset + vs->size > size) {
            throw MakeError(env, "EINVAL", what + ": rodata " + name + " is " + std::to_string(vs->size) +
                                               " bytes, got " + std::to_string(value.Length()));
          }
          memcpy(data + vs->offset, value.Data(), vs->size);
          found = true;
          break;
        }
        if (!found) throw MakeError(env, "ENOENT", what + ": no const volatile variable named " + name);
      }
      if (data && bpf_map__set_initial_value(rodata, image.data(), image.size()) != 0) {
        throw MakeError(env, "EINVAL", what + ": cannot set .rodata");
      }
    }

    TakeLog();
    int rc = bpf_object__load(obj_);
    if (rc != 0) {
      int err = -rc;
      std::string log = TakeLog();
      VerifierReport report = ExtractVerifierLog(log);
      if (!report.log.empty()) {
        Napi::Error e = MakeError(env, "EVERIFIER",
                                  what + ": the verifier rejected program " + report.program + ": " + LogTail(report.log, 2), err);
        e.Set("program", Napi::String::New(env, report.program));
        e.Set("verifierLog", Napi::String::New(env, report.log));
        throw e;
      }
      if (err == EPERM || err == EACCES) throw PermissionError(env, what, err);
      std::string tail = LogTail(log, 1);
      throw MakeError(env, ErrnoName(err), what + ": " + strerror(err) + (tail.empty() ? "" : " (" + tail + ")"), err);
    }
  } catch (...) {
    bpf_object__close(obj_);
    obj_ = nullptr;
    throw;
  }
}

struct bpf_map* BpfObject::FindMap(Napi::Env env, const std::string& name) {
  struct bpf_map* map = bpf_object__find_map_by_name(obj_, name.c_str());
  if (!map) throw MakeError(env, "ENOENT", Basename(path_) + ": no map named " + name);
  return map;
}

void BpfObject::CheckOpen(Napi::Env env) {
  if (!obj_ || close_requested_) throw MakeError(env, "EBADF", Basename(path_) + " is closed");
}

void BpfObject::Destroy() {
  for (auto* l : links_) bpf_link__destroy(l);
  links_.clear();
  for (auto& kv : iter_links_) bpf_link__destroy(kv.second);
  iter_links_.clear();
  if (obj_) bpf_object__close(obj_);
  obj_ = nullptr;
}

bool IsIter(struct bpf_program* prog) {
  const char* sec = bpf_program__section_name(prog);
  return sec && strncmp(sec, "iter/", 5) == 0;
}

Napi::Value BpfObject::Attach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  struct bpf_program* prog;
  bpf_object__for_each_program(prog, obj_) {
    if (!bpf_program__autoload(prog)) continue;
    TakeLog();
    struct bpf_link* link = IsIter(prog) ? bpf_program__attach_iter(prog, nullptr) : bpf_program__attach(prog);
    if (!link) {
      int err = errno;
      std::string name = bpf_program__name(prog);
      std::string tail = LogTail(TakeLog(), 1);
      Napi::Error e = MakeError(env, "EATTACH",
                                "attaching " + name + " (" + bpf_program__section_name(prog) + "): " + strerror(err) +
                                    (tail.empty() ? "" : " (" + tail + ")"),
                                err);
      e.Set("program", Napi::String::New(env, name));
      throw e;
    }
    if (IsIter(prog)) iter_links_[bpf_program__name(prog)] = link;
    else links_.push_back(link);
  }
  return env.Undefined();
}

Napi::Value BpfObject::Programs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  Napi::Array out = Napi::Array::New(env);
  struct bpf_program* prog;
  uint32_t i = 0;
  bpf_object__for_each_program(prog, obj_) {
    int fd = bpf_program__fd(prog);
    if (fd < 0) continue;
    struct bpf_prog_info pinfo;
    memset(&pinfo, 0, sizeof pinfo);
    __u32 len = sizeof pinfo;
    if (bpf_obj_get_info_by_fd(fd, &pinfo, &len) != 0) continue;
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", bpf_program__name(prog));
    o.Set("section", bpf_program__section_name(prog));
    o.Set("id", Napi::Number::New(env, pinfo.id));
    o.Set("runTimeNs", Napi::BigInt::New(env, static_cast<uint64_t>(pinfo.run_time_ns)));
    o.Set("runCount", Napi::BigInt::New(env, static_cast<uint64_t>(pinfo.run_cnt)));
    o.Set("recursionMisses", Napi::BigInt::New(env, static_cast<uint64_t>(pinfo.recursion_misses)));
    out.Set(i++, o);
  }
  return out;
}

Napi::Value BpfObject::Maps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  Napi::Array out = Napi::Array::New(env);
  struct bpf_map* map;
  uint32_t i = 0;
  bpf_object__for_each_map(map, obj_) {
    if (bpf_map__is_internal(map)) continue;
    struct bpf_map_info minfo;
    memset(&minfo, 0, sizeof minfo);
    __u32 len = sizeof minfo;
    int fd = bpf_map__fd(map);
    if (fd < 0 || bpf_obj_get_info_by_fd(fd, &minfo, &len) != 0) continue;
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", bpf_map__name(map));
    o.Set("id", Napi::Number::New(env, minfo.id));
    o.Set("type", Napi::Number::New(env, minfo.type));
    o.Set("keySize", Napi::Number::New(env, minfo.key_size));
    o.Set("valueSize", Napi::Number::New(env, minfo.value_size));
    o.Set("maxEntries", Napi::Number::New(env, minfo.max_entries));
    out.Set(i++, o);
  }
  return out;
}

// Base for workers that report failures as errors with a code.
class CodedWorker : public Napi::AsyncWorker {
 public:
  CodedWorker(Napi::Env env, BpfObject* obj)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), hold_(obj) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Fail(int err, const std::string& message) {
    err_ = err;
    SetError(message);
  }
  void OnError(const Napi::Error& e) override {
    Napi::Env env = Env();
    deferred_.Reject(MakeError(env, ErrnoName(err_), e.Message(), err_).Value());
  }
  Napi::Promise::Deferred deferred_;

 private:
  Inflight hold_;
  int err_ = 0;
};

class ReadMapWorker : public CodedWorker {
 public:
  ReadMapWorker(Napi::Env env, BpfObject* obj, std::string name, int fd, size_t key_size, size_t value_size,
                bool percpu)
      : CodedWorker(env, obj), name_(std::move(name)), fd_(fd), key_size_(key_size), value_size_(value_size),
        percpu_(percpu), ncpu_(obj->ncpu()) {}

  void Execute() override {
    int rc = ReadWholeMap(fd_, key_size_, value_size_, percpu_, ncpu_, &result_);
    if (rc == -EINVAL && value_size_ % 8 != 0) return Fail(EINVAL, "map " + name_ + ": value size is not a multiple of 8");
    if (rc != 0) Fail(-rc, "reading map " + name_ + ": " + strerror(-rc));
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object out = Napi::Object::New(env);
    out.Set("count", Napi::Number::New(env, static_cast<double>(result_.count)));
    out.Set("keySize", Napi::Number::New(env, static_cast<double>(result_.key_size)));
    out.Set("valueWords", Napi::Number::New(env, static_cast<double>(result_.value_words)));
    out.Set("keys", Napi::Buffer<uint8_t>::Copy(env, result_.keys.data(), result_.keys.size()));
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, result_.values.size() * 8);
    if (!result_.values.empty()) memcpy(ab.Data(), result_.values.data(), result_.values.size() * 8);
    out.Set("values", Napi::BigUint64Array::New(env, result_.values.size(), ab, 0));
    deferred_.Resolve(out);
  }

 private:
  std::string name_;
  int fd_;
  size_t key_size_, value_size_;
  bool percpu_;
  int ncpu_;
  MapRead result_;
};

Napi::Value BpfObject::ReadMap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  std::string name = info[0].As<Napi::String>();
  struct bpf_map* map = FindMap(env, name);
  auto* w = new ReadMapWorker(env, this, name, bpf_map__fd(map), bpf_map__key_size(map), bpf_map__value_size(map),
                              IsPerCpu(bpf_map__type(map)));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

class IterWorker : public CodedWorker {
 public:
  IterWorker(Napi::Env env, BpfObject* obj, std::string name, int link_fd)
      : CodedWorker(env, obj), name_(std::move(name)), link_fd_(link_fd) {}

  void Execute() override {
    int fd = bpf_iter_create(link_fd_);
    if (fd < 0) return Fail(errno, "creating iterator " + name_ + ": " + strerror(errno));
    char buf[64 * 1024];
    for (;;) {
      ssize_t n = read(fd, buf, sizeof buf);
      if (n == 0) break;
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        int err = errno;
        close(fd);
        return Fail(err, "reading iterator " + name_ + ": " + strerror(err));
      }
      data_.insert(data_.end(), buf, buf + n);
    }
    close(fd);
  }

  void OnOK() override { deferred_.Resolve(Napi::Buffer<uint8_t>::Copy(Env(), data_.data(), data_.size())); }

 private:
  std::string name_;
  int link_fd_;
  std::vector<uint8_t> data_;
};

Napi::Value BpfObject::RunIter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  std::string name = info[0].As<Napi::String>();
  auto it = iter_links_.find(name);
  if (it == iter_links_.end()) throw MakeError(env, "ENOENT", Basename(path_) + ": no attached iterator named " + name);
  auto* w = new IterWorker(env, this, name, bpf_link__fd(it->second));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value BpfObject::UpdateElem(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  std::string name = info[0].As<Napi::String>();
  struct bpf_map* map = FindMap(env, name);
  Napi::Buffer<uint8_t> key = info[1].As<Napi::Buffer<uint8_t>>();
  Napi::Buffer<uint8_t> value = info[2].As<Napi::Buffer<uint8_t>>();
  size_t ksz = bpf_map__key_size(map), vsz = bpf_map__value_size(map);
  if (key.Length() != ksz || value.Length() != vsz) {
    throw MakeError(env, "EINVAL", "map " + name + ": key/value must be " + std::to_string(ksz) + "/" +
                                       std::to_string(vsz) + " bytes");
  }
  std::vector<uint8_t> buf;
  const void* v = value.Data();
  if (IsPerCpu(bpf_map__type(map))) {
    size_t stride = RoundUp8(vsz);
    buf.assign(stride * ncpu_, 0);
    for (int c = 0; c < ncpu_; c++) memcpy(buf.data() + c * stride, value.Data(), vsz);
    v = buf.data();
  }
  if (bpf_map_update_elem(bpf_map__fd(map), key.Data(), v, BPF_ANY) != 0) {
    int err = errno;
    throw MakeError(env, ErrnoName(err), "updating map " + name + ": " + strerror(err), err);
  }
  return env.Undefined();
}

Napi::Value BpfObject::DeleteKeys(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  std::string name = info[0].As<Napi::String>();
  struct bpf_map* map = FindMap(env, name);
  Napi::Buffer<uint8_t> keys = info[1].As<Napi::Buffer<uint8_t>>();
  size_t ksz = bpf_map__key_size(map);
  if (ksz == 0 || keys.Length() % ksz != 0) throw MakeError(env, "EINVAL", "map " + name + ": keys must be a multiple of " + std::to_string(ksz) + " bytes");
  size_t n = keys.Length() / ksz;
  int deleted = 0;
  for (size_t i = 0; i < n; i++) {
    if (bpf_map_delete_elem(bpf_map__fd(map), keys.Data() + i * ksz) == 0) deleted++;
  }
  return Napi::Number::New(env, deleted);
}

Napi::Value BpfObject::Close(const Napi::CallbackInfo& info) {
  close_requested_ = true;
  if (inflight_ == 0) Destroy();
  return info.Env().Undefined();
}

Napi::Function BpfObject::Init(Napi::Env env) {
  return DefineClass(env, "BpfObject",
                     {
                         InstanceMethod("attach", &BpfObject::Attach),
                         InstanceMethod("programs", &BpfObject::Programs),
                         InstanceMethod("maps", &BpfObject::Maps),
                         InstanceMethod("readMap", &BpfObject::ReadMap),
                         InstanceMethod("runIter", &BpfObject::RunIter),
                         InstanceMethod("updateElem", &BpfObject::UpdateElem),
                         InstanceMethod("deleteKeys", &BpfObject::DeleteKeys),
                         InstanceMethod("close", &BpfObject::Close),
                     });
}

Napi::Value NumPossibleCpus(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), libbpf_num_possible_cpus());
}

Napi::Value BtfHasType(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  static struct btf* vmlinux = nullptr;
  static int load_err = 0;
  if (!vmlinux && !load_err) {
    vmlinux = btf__load_vmlinux_btf();
    if (!vmlinux) load_err = errno ? errno : ENOENT;
  }
  if (!vmlinux) throw MakeError(env, "ENOBTF", std::string("cannot load kernel BTF (") + kBtfPath + "): " + strerror(load_err), load_err);
  std::string name = info[0].As<Napi::String>();
  std::string kind = info[1].As<Napi::String>();
  __u32 k = kind == "typedef" ? BTF_KIND_TYPEDEF : kind == "struct" ? BTF_KIND_STRUCT : kind == "func" ? BTF_KIND_FUNC : kind == "enum" ? BTF_KIND_ENUM : 0;
  if (!k) throw MakeError(env, "EINVAL", "unknown BTF kind " + kind);
  return Napi::Boolean::New(env, btf__find_by_name_kind(vmlinux, name.c_str(), k) >= 0);
}

Napi::Value EnableStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
  if (fd < 0) {
    int err = errno;
    Napi::Error e = MakeError(env, ErrnoName(err), std::string("enabling BPF stats: ") + strerror(err) +
                                                       (err == EPERM ? " (needs CAP_SYS_ADMIN)" : ""), err);
    if (err == EPERM) e.Set("capability", Napi::String::New(env, "CAP_SYS_ADMIN"));
    throw e;
  }
  return Napi::Number::New(env, fd);
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  close(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

Napi::Value LibbpfVersion(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), std::to_string(libbpf_major_version()) + "." + std::to_string(libbpf_minor_version()));
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  libbpf_set_print(LibbpfPrint);
  libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
  exports.Set("BpfObject", BpfObject::Init(env));
  exports.Set("numPossibleCpus", Napi::Function::New(env, NumPossibleCpus));
  exports.Set("btfHasType", Napi::Function::New(env, BtfHasType));
  exports.Set("enableStats", Napi::Function::New(env, EnableStats));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd));
  exports.Set("libbpfVersion", Napi::Function::New(env, LibbpfVersion));
  return exports;
}

}  // namespace

NODE_API_MODULE(kerntap_native, InitModule)
