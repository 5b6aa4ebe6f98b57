// kerntap native addon: a thin layer over libbpf.
//
// It opens, loads and attaches BPF objects, reads maps in batches (summing
// per-CPU copies), runs iterators and reports program stats. Map reads and
// iterators run on the libuv thread pool, never on the event loop. Every
// policy decision (what to load, labels, limits) lives in TypeScript; see
// src/bpf/native.ts for the contract.
//
// Errors are JS Errors with `code` (and `errno`, `program`, `capability`,
// `verifierLog` where they apply), as documented in src/bpf/native.ts.
#include <napi.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdarg>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace {

const char kBtfPath[] = "/sys/kernel/btf/vmlinux";
// Default kernel verifier log buffer per program (the `logSize` option).
// Kernels since 6.4 keep the tail of the log when it does not fit.
constexpr size_t kDefaultLogSize = 16 * 1024;
// How much of the verifier log travels on the error as `verifierLog`.
constexpr size_t kVerifierLogKeep = 4 * 1024;
// What libbpf printed recently (warnings), for error messages.
constexpr size_t kPrintKeep = 16 * 1024;
// Entries per bpf_map_lookup_batch call.
constexpr uint32_t kDefaultBatch = 4096;
// The kernel's internal "operation not supported" (not in userspace errno.h).
constexpr int kENOTSUPP = 524;

std::atomic<uint32_t> g_batch{kDefaultBatch};
bool g_debug = false;

// libbpf reports through one process-wide callback. Its warnings are kept
// (bounded) so that error messages can quote the last one; nothing goes to
// stderr unless KERNTAP_LIBBPF_DEBUG=1.
std::mutex g_print_mutex;
std::string g_printed;

int LibbpfPrint(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (g_debug) {
    va_list copy;
    va_copy(copy, args);
    vfprintf(stderr, fmt, copy);
    va_end(copy);
  }
  if (level == LIBBPF_DEBUG) return 0;
  char buf[1024];
  vsnprintf(buf, sizeof buf, fmt, args);
  std::lock_guard<std::mutex> lock(g_print_mutex);
  g_printed += buf;
  if (g_printed.size() > 2 * kPrintKeep) g_printed.erase(0, g_printed.size() - kPrintKeep);
  return 0;
}

std::string TakePrinted() {
  std::lock_guard<std::mutex> lock(g_print_mutex);
  std::string out;
  out.swap(g_printed);
  return out;
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// The last `lines` meaningful lines of a log, joined with " | " for a
// one-line message. Verifier statistics lines are not meaningful.
std::string LogTail(const std::string& log, int lines) {
  std::vector<std::string> kept;
  size_t pos = log.size();
  while (pos > 0 && static_cast<int>(kept.size()) < lines) {
    size_t nl = log.rfind('\n', pos - 1);
    size_t from = nl == std::string::npos ? 0 : nl + 1;
    std::string line = Trim(log.substr(from, pos - from));
    if (line.rfind("libbpf: ", 0) == 0) line = line.substr(8);
    if (!line.empty() && line.rfind("processed ", 0) != 0 && line.rfind("verification time", 0) != 0 &&
        line.rfind("stack depth", 0) != 0 && line.rfind("-- END PROG LOAD LOG", 0) != 0) {
      kept.insert(kept.begin(), line);
    }
    if (nl == std::string::npos) break;
    pos = nl;
  }
  std::string out;
  for (auto& l : kept) out += (out.empty() ? "" : " | ") + l;
  return out;
}

// The last `keep` bytes of a log, starting at a line boundary.
std::string TailBytes(const std::string& log, size_t keep) {
  if (log.size() <= keep) return log;
  std::string t = log.substr(log.size() - keep);
  size_t nl = t.find('\n');
  return nl == std::string::npos || nl + 1 == t.size() ? t : t.substr(nl + 1);
}

std::string ErrnoName(int err) {
  if (err == kENOTSUPP) return "ENOTSUPP";
  const char* name = strerrorname_np(err);
  return name ? name : "E" + std::to_string(err);
}

std::string ErrText(int err) {
  if (err == kENOTSUPP) return "operation not supported";
  std::string s = strerror(err);
  if (!s.empty()) s[0] = static_cast<char>(tolower(s[0]));
  return s;
}

Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message, int err = 0) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  if (err) e.Set("errno", Napi::Number::New(env, err));
  return e;
}

Napi::Error ErrnoError(Napi::Env env, int err, const std::string& message) {
  return MakeError(env, ErrnoName(err), message, err);
}

std::string Basename(const std::string& p) {
  size_t s = p.rfind('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

bool IsPerCpu(enum bpf_map_type t) {
  return t == BPF_MAP_TYPE_PERCPU_HASH || t == BPF_MAP_TYPE_PERCPU_ARRAY || t == BPF_MAP_TYPE_LRU_PERCPU_HASH ||
         t == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

bool IsTracing(enum bpf_prog_type t) {
  switch (t) {
    case BPF_PROG_TYPE_KPROBE:
    case BPF_PROG_TYPE_TRACEPOINT:
    case BPF_PROG_TYPE_PERF_EVENT:
    case BPF_PROG_TYPE_RAW_TRACEPOINT:
    case BPF_PROG_TYPE_RAW_TRACEPOINT_WRITABLE:
    case BPF_PROG_TYPE_TRACING:
      return true;
    default:
      return false;
  }
}

bool IsIter(struct bpf_program* prog) {
  const char* sec = bpf_program__section_name(prog);
  return sec && strncmp(sec, "iter/", 5) == 0;
}

// Bytes of a Buffer (or any TypedArray / DataView) argument.
std::pair<const uint8_t*, size_t> Bytes(Napi::Env env, const Napi::Value& v, const char* what) {
  if (v.IsBuffer()) {
    auto b = v.As<Napi::Buffer<uint8_t>>();
    return {b.Data(), b.Length()};
  }
  if (v.IsTypedArray()) {
    auto t = v.As<Napi::TypedArray>();
    return {static_cast<const uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset(), t.ByteLength()};
  }
  throw Napi::TypeError::New(env, std::string(what) + " must be a Buffer");
}

std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsString()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string");
  return info[i].As<Napi::String>();
}

// ---------------------------------------------------------------------------
// Whole-map reads (worker thread; no JS).

struct MapRead {
  size_t key_size = 0;
  size_t value_words = 0;
  size_t count = 0;
  std::vector<uint8_t> keys;
  std::vector<uint64_t> values;
};

// Reads every element of a map with bpf_map_lookup_batch in chunks, or with
// get_next_key + lookup when the map type has no batch operations. Per-CPU
// copies are summed per u64 word. Returns 0 or -errno.
int ReadWholeMap(int fd, size_t key_size, size_t value_size, bool percpu, int ncpu, uint32_t chunk,
                 uint32_t max_chunk, MapRead* out) {
  if (value_size == 0 || value_size % 8 != 0) return -EINVAL;
  const size_t words = value_size / 8;
  const int copies = percpu ? ncpu : 1;
  const size_t stride = value_size * copies;  // value_size is already a multiple of 8
  out->key_size = key_size;
  out->value_words = words;

  auto append = [&](const uint8_t* keys, const uint8_t* vals, size_t n) {
    out->keys.insert(out->keys.end(), keys, keys + n * key_size);
    size_t base = out->values.size();
    out->values.resize(base + n * words, 0);
    for (size_t i = 0; i < n; i++) {
      uint64_t* dst = &out->values[base + i * words];
      for (int c = 0; c < copies; c++) {
        const uint8_t* src = vals + i * stride + c * value_size;
        for (size_t w = 0; w < words; w++) {
          uint64_t x;
          memcpy(&x, src + w * 8, 8);
          dst[w] += x;
        }
      }
    }
    out->count += n;
  };

  if (chunk == 0) chunk = 1;
  std::vector<uint8_t> keys, vals;
  // The batch token is a bucket index for hashes and a key for the generic
  // (array) implementation.
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
    if (rc < 0 && err != ENOENT && err != EINTR) {
      // On errors found before the walk (e.g. no batch support) the kernel
      // leaves the count as passed in, so n means nothing here.
      if (err == ENOSPC) {  // a hash bucket holds more entries than the chunk
        if (chunk >= (1u << 24)) return -ENOSPC;
        chunk *= 2;
        continue;
      }
      if (first && (err == EINVAL || err == ENOTSUP || err == kENOTSUPP)) break;  // no batch ops: fall back
      return -err;
    }
    if (n > chunk) return -EIO;
    append(keys.data(), vals.data(), n);
    if (err == ENOENT) return 0;  // that was the last batch
    if (n == 0) {
      if (err == EINTR) continue;
      return 0;  // nothing more (not expected: the kernel reports the end with ENOENT)
    }
    first = false;
    in_batch = out_batch;
    // Big maps are read in fewer calls; small ones never pay for big buffers.
    if (chunk < max_chunk) chunk = std::min(chunk * 2, max_chunk);
  }

  // Fallback: one key at a time.
  std::vector<uint8_t> key(key_size), next(key_size), val(stride);
  bool have = false;
  for (;;) {
    if (bpf_map_get_next_key(fd, have ? key.data() : nullptr, next.data()) != 0) {
      return errno == ENOENT ? 0 : -errno;
    }
    if (bpf_map_lookup_elem(fd, next.data(), val.data()) == 0) append(next.data(), val.data(), 1);
    else if (errno != ENOENT) return -errno;
    key.swap(next);
    have = true;
  }
}

// The kernel's own figure for a map's memory ("memlock:" in fdinfo): what
// the map uses on 6.4+, an estimate from its size before. 0 if absent.
uint64_t FdinfoMemlock(int fd) {
  std::string path = "/proc/self/fdinfo/" + std::to_string(fd);
  FILE* f = fopen(path.c_str(), "re");
  if (!f) return 0;
  char line[256];
  uint64_t v = 0;
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "memlock: %" SCNu64, &v) == 1) break;
  }
  fclose(f);
  return v;
}

// ---------------------------------------------------------------------------

class BpfObject : public Napi::ObjectWrap<BpfObject> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit BpfObject(const Napi::CallbackInfo& info);
  ~BpfObject() override { Destroy(); }  // also the GC finalizer

  // A worker in flight keeps the JS object alive (Ref) and the fds open
  // (close() is deferred until the last one finishes). JS thread only.
  void Acquire() {
    inflight_++;
    Ref();
  }
  void Release() {
    if (--inflight_ == 0 && close_requested_) Destroy();
    Unref();
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
  Napi::Value TakeElems(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  void ApplyOptions(Napi::Env env, const Napi::Object& opts);
  void SetRodata(Napi::Env env, const Napi::Object& values);
  void Load(Napi::Env env, size_t log_size);
  struct bpf_map* FindMap(Napi::Env env, const std::string& name);
  void CheckOpen(Napi::Env env);
  void Destroy();

  struct bpf_object* obj_ = nullptr;
  std::string path_;
  std::string what_;  // "loading x.bpf.o"
  std::vector<struct bpf_link*> links_;
  std::map<std::string, struct bpf_link*> iter_links_;
  bool attached_ = false;
  int ncpu_ = 1;
  int inflight_ = 0;
  bool close_requested_ = false;
};

BpfObject::BpfObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfObject>(info) {
  Napi::Env env = info.Env();
  path_ = StringArg(info, 0, "BpfObject: path");
  Napi::Object opts = Napi::Object::New(env);
  if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull()) {
    if (!info[1].IsObject()) throw Napi::TypeError::New(env, "BpfObject: options must be an object");
    opts = info[1].As<Napi::Object>();
  }
  what_ = "loading " + Basename(path_);
  ncpu_ = libbpf_num_possible_cpus();
  if (ncpu_ < 1) ncpu_ = 1;

  size_t log_size = kDefaultLogSize;
  if (opts.Has("logSize") && !opts.Get("logSize").IsUndefined()) {
    Napi::Value v = opts.Get("logSize");
    if (!v.IsNumber() || v.As<Napi::Number>().DoubleValue() < 1) throw Napi::TypeError::New(env, "logSize must be a positive number");
    log_size = std::clamp<size_t>(static_cast<size_t>(v.As<Napi::Number>().DoubleValue()), 1024, 64u << 20);
  }

  struct stat st;
  if (stat(path_.c_str(), &st) != 0) {
    int err = errno;
    if (err == ENOENT) throw MakeError(env, "ENOENT", "BPF object " + path_ + " not found (run `npm run build`)", ENOENT);
    throw ErrnoError(env, err, "BPF object " + path_ + ": " + ErrText(err));
  }
  if (access(kBtfPath, R_OK) != 0) {
    throw MakeError(env, "ENOBTF", std::string("kernel BTF not found at ") + kBtfPath +
                                       ": kerntap needs a kernel built with CONFIG_DEBUG_INFO_BTF=y");
  }

  TakePrinted();
  obj_ = bpf_object__open_file(path_.c_str(), nullptr);
  if (!obj_) {
    int err = errno;
    std::string tail = LogTail(TakePrinted(), 1);
    throw ErrnoError(env, err, what_ + ": cannot open: " + ErrText(err) + (tail.empty() ? "" : " (" + tail + ")"));
  }
  try {
    ApplyOptions(env, opts);
    Load(env, log_size);
  } catch (...) {
    bpf_object__close(obj_);
    obj_ = nullptr;
    throw;
  }
}

void BpfObject::ApplyOptions(Napi::Env env, const Napi::Object& opts) {
  Napi::Value v = opts.Get("maxEntries");
  if (!v.IsUndefined()) {
    if (!v.IsObject()) throw Napi::TypeError::New(env, "maxEntries must be an object");
    Napi::Object m = v.As<Napi::Object>();
    Napi::Array names = m.GetPropertyNames();
    for (uint32_t i = 0; i < names.Length(); i++) {
      std::string name = names.Get(i).ToString();
      struct bpf_map* map = FindMap(env, name);
      Napi::Value n = m.Get(name);
      double d = n.IsNumber() ? n.As<Napi::Number>().DoubleValue() : -1;
      if (d < 1 || d > UINT32_MAX || d != static_cast<double>(static_cast<uint32_t>(d))) {
        throw Napi::TypeError::New(env, "maxEntries." + name + " must be a positive integer");
      }
      int rc = bpf_map__set_max_entries(map, static_cast<uint32_t>(d));
      if (rc != 0) throw ErrnoError(env, -rc, what_ + ": cannot set max_entries of map " + name + ": " + ErrText(-rc));
    }
  }
  v = opts.Get("mapFlags");
  if (!v.IsUndefined()) {
    if (!v.IsObject()) throw Napi::TypeError::New(env, "mapFlags must be an object");
    Napi::Object m = v.As<Napi::Object>();
    Napi::Array names = m.GetPropertyNames();
    for (uint32_t i = 0; i < names.Length(); i++) {
      std::string name = names.Get(i).ToString();
      struct bpf_map* map = FindMap(env, name);
      Napi::Value n = m.Get(name);
      double d = n.IsNumber() ? n.As<Napi::Number>().DoubleValue() : -1;
      if (d < 0 || d > UINT32_MAX || d != static_cast<double>(static_cast<uint32_t>(d))) {
        throw Napi::TypeError::New(env, "mapFlags." + name + " must be a non-negative integer");
      }
      int rc = bpf_map__set_map_flags(map, static_cast<uint32_t>(d));
      if (rc != 0) throw ErrnoError(env, -rc, what_ + ": cannot set flags of map " + name + ": " + ErrText(-rc));
    }
  }
  v = opts.Get("skipPrograms");
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

// Loads with a verifier log buffer per program: libbpf loads with log level 0
// and, only if a program fails, loads it again with logging into its buffer.
void BpfObject::Load(Napi::Env env, size_t log_size) {
  std::vector<std::pair<struct bpf_program*, std::vector<char>>> logs;
  bool tracing = false;
  struct bpf_program* prog;
  bpf_object__for_each_program(prog, obj_) {
    if (!bpf_program__autoload(prog)) continue;
    if (IsTracing(bpf_program__type(prog))) tracing = true;
    logs.emplace_back(prog, std::vector<char>(log_size, 0));
  }
  for (auto& l : logs) bpf_program__set_log_buf(l.first, l.second.data(), l.second.size());

  TakePrinted();
  int rc = bpf_object__load(obj_);
  std::string printed = TakePrinted();
  if (rc == 0) return;
  int err = -rc;

  // The verifier gives up when a signal is pending (libbpf has already
  // retried): that is no verdict on the program, so say what happened.
  if (err == EAGAIN || err == EINTR) {
    throw ErrnoError(env, err, what_ + ": verification was interrupted by signals (" + ErrText(err) +
                                   ") on every attempt; a profiler's timer signal (SIGPROF) can do that");
  }
  for (auto& l : logs) {
    l.second.back() = '\0';
    std::string log(l.second.data());
    if (Trim(log).empty()) continue;
    // A log that was cut (rolling mode) starts mid-line.
    if (strnlen(l.second.data(), l.second.size()) >= l.second.size() - 2) log = TailBytes(log, log.size() - 1);
    std::string name = bpf_program__name(l.first);
    Napi::Error e = MakeError(env, "EVERIFIER", what_ + ": the verifier rejected program " + name + ": " + LogTail(log, 2), err);
    e.Set("program", Napi::String::New(env, name));
    e.Set("verifierLog", Napi::String::New(env, TailBytes(log, kVerifierLogKeep)));
    throw e;
  }
  if (err == EPERM || err == EACCES) {
    Napi::Error e = ErrnoError(env, err, what_ + ": permission denied: needs CAP_BPF" +
                                             std::string(tracing ? " and CAP_PERFMON" : "") + " (or root)");
    e.Set("capability", Napi::String::New(env, "CAP_BPF"));
    throw e;
  }
  // Which program, if libbpf said so ("prog 'x': failed to load: -22").
  std::string program;
  size_t p = printed.rfind("prog '");
  if (p != std::string::npos) {
    size_t q = printed.find("'", p + 6);
    if (q != std::string::npos) program = printed.substr(p + 6, q - p - 6);
  }
  std::string tail = LogTail(printed, 1);
  Napi::Error e = ErrnoError(env, err, what_ + ": " + ErrText(err) + (tail.empty() ? "" : " (" + tail + ")"));
  if (!program.empty()) e.Set("program", Napi::String::New(env, program));
  throw e;
}

struct bpf_map* BpfObject::FindMap(Napi::Env env, const std::string& name) {
  struct bpf_map* map = bpf_object__find_map_by_name(obj_, name.c_str());
  if (!map) throw MakeError(env, "ENOENT", Basename(path_) + ": no map named " + name, ENOENT);
  return map;
}

void BpfObject::CheckOpen(Napi::Env env) {
  if (!obj_ || close_requested_) throw MakeError(env, "EBADF", Basename(path_) + " is closed", EBADF);
}

void BpfObject::Destroy() {
  for (auto* l : links_) bpf_link__destroy(l);
  links_.clear();
  for (auto& kv : iter_links_) bpf_link__destroy(kv.second);
  iter_links_.clear();
  if (obj_) bpf_object__close(obj_);
  obj_ = nullptr;
}

Napi::Value BpfObject::Attach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  if (attached_) return env.Undefined();
  std::vector<struct bpf_link*> links;
  std::map<std::string, struct bpf_link*> iters;
  struct bpf_program* prog;
  bpf_object__for_each_program(prog, obj_) {
    if (!bpf_program__autoload(prog) || bpf_program__fd(prog) < 0) continue;
    TakePrinted();
    bool iter = IsIter(prog);
    struct bpf_link* link = iter ? bpf_program__attach_iter(prog, nullptr) : bpf_program__attach(prog);
    if (!link) {
      int err = errno;
      for (auto* l : links) bpf_link__destroy(l);
      for (auto& kv : iters) bpf_link__destroy(kv.second);
      std::string name = bpf_program__name(prog);
      std::string tail = LogTail(TakePrinted(), 1);
      Napi::Error e = MakeError(env, "EATTACH",
                                "attaching " + name + " (" + bpf_program__section_name(prog) + ") from " + Basename(path_) +
                                    ": " + ErrText(err) + (tail.empty() ? "" : " (" + tail + ")"),
                                err);
      e.Set("program", Napi::String::New(env, name));
      throw e;
    }
    if (iter) iters[bpf_program__name(prog)] = link;
    else links.push_back(link);
  }
  links_ = std::move(links);
  iter_links_ = std::move(iters);
  attached_ = true;
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
    if (fd < 0) continue;  // not loaded (skipPrograms)
    struct bpf_prog_info pinfo;
    memset(&pinfo, 0, sizeof pinfo);
    __u32 len = sizeof pinfo;
    if (bpf_obj_get_info_by_fd(fd, &pinfo, &len) != 0) {
      int err = errno;
      throw ErrnoError(env, err, std::string("program ") + bpf_program__name(prog) + ": cannot get info: " + ErrText(err));
    }
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
    if (bpf_map__is_internal(map)) continue;  // .rodata, .bss, .data, .kconfig
    int fd = bpf_map__fd(map);
    if (fd < 0) continue;
    struct bpf_map_info minfo;
    memset(&minfo, 0, sizeof minfo);
    __u32 len = sizeof minfo;
    if (bpf_obj_get_info_by_fd(fd, &minfo, &len) != 0) {
      int err = errno;
      throw ErrnoError(env, err, std::string("map ") + bpf_map__name(map) + ": cannot get info: " + ErrText(err));
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", bpf_map__name(map));
    o.Set("id", Napi::Number::New(env, minfo.id));
    o.Set("type", Napi::Number::New(env, minfo.type));
    o.Set("keySize", Napi::Number::New(env, minfo.key_size));
    o.Set("valueSize", Napi::Number::New(env, minfo.value_size));
    o.Set("maxEntries", Napi::Number::New(env, minfo.max_entries));
    o.Set("flags", Napi::Number::New(env, minfo.map_flags));
    o.Set("memlock", Napi::Number::New(env, static_cast<double>(FdinfoMemlock(fd))));
    out.Set(i++, o);
  }
  return out;
}

// A worker that settles a promise; failures carry `code` and `errno`.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, BpfObject* obj, const char* name)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)), obj_(obj) {
    obj_->Acquire();
  }
  ~PromiseWorker() override { obj_->Release(); }
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Fail(int err, const std::string& message) {
    err_ = err;
    SetError(message);
  }
  void OnError(const Napi::Error& e) override {
    deferred_.Reject(ErrnoError(Env(), err_ ? err_ : EIO, e.Message()).Value());
  }
  Napi::Promise::Deferred deferred_;

 private:
  BpfObject* obj_;
  int err_ = 0;
};

Napi::Value Rejected(Napi::Env env, const Napi::Error& e) {
  auto d = Napi::Promise::Deferred::New(env);
  d.Reject(e.Value());
  return d.Promise();
}

class ReadMapWorker : public PromiseWorker {
 public:
  ReadMapWorker(Napi::Env env, BpfObject* obj, std::string name, int fd, size_t key_size, size_t value_size,
                bool percpu, uint32_t max_entries)
      : PromiseWorker(env, obj, "kerntap.readMap"), name_(std::move(name)), fd_(fd), key_size_(key_size),
        value_size_(value_size), percpu_(percpu), ncpu_(obj->ncpu()), chunk_(g_batch.load()),
        max_entries_(max_entries) {}

  void Execute() override {
    // Chunks double from the configured size up to the map's size, within
    // 8 MiB of per-CPU values per call (the kernel allocates as much again).
    uint32_t by_bytes = static_cast<uint32_t>(std::max<size_t>(1, kMaxChunkBytes / (value_size_ * (percpu_ ? ncpu_ : 1))));
    uint32_t max_chunk = std::max(chunk_, std::min({max_entries_, by_bytes, kMaxChunk}));
    int rc = ReadWholeMap(fd_, key_size_, value_size_, percpu_, ncpu_, chunk_, max_chunk, &result_);
    if (rc != 0) Fail(-rc, "reading map " + name_ + ": " + ErrText(-rc));
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object out = Napi::Object::New(env);
    const MapRead* r = &result_;
    out.Set("count", Napi::Number::New(env, static_cast<double>(r->count)));
    out.Set("keySize", Napi::Number::New(env, static_cast<double>(r->key_size)));
    out.Set("valueWords", Napi::Number::New(env, static_cast<double>(r->value_words)));
    // Copied into V8-owned memory, which V8 accounts for; the native
    // buffers go with the worker right after this.
    out.Set("keys", Napi::Buffer<uint8_t>::Copy(env, r->keys.data(), r->keys.size()));
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, r->values.size() * 8);
    if (!r->values.empty()) memcpy(ab.Data(), r->values.data(), r->values.size() * 8);
    out.Set("values", Napi::BigUint64Array::New(env, r->values.size(), ab, 0));
    deferred_.Resolve(out);
  }

 private:
  std::string name_;
  int fd_;
  size_t key_size_, value_size_;
  bool percpu_;
  int ncpu_;
  uint32_t chunk_;
  uint32_t max_entries_;
  MapRead result_;
  static constexpr uint32_t kMaxChunk = 1u << 18;
  static constexpr size_t kMaxChunkBytes = 8u << 20;
};

Napi::Value BpfObject::ReadMap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    CheckOpen(env);
    std::string name = StringArg(info, 0, "readMap: map name");
    struct bpf_map* map = FindMap(env, name);
    size_t vsz = bpf_map__value_size(map);
    if (vsz == 0 || vsz % 8 != 0) {
      throw MakeError(env, "EINVAL", "reading map " + name + ": value size " + std::to_string(vsz) +
                                         " is not a multiple of 8 bytes", EINVAL);
    }
    auto* w = new ReadMapWorker(env, this, name, bpf_map__fd(map), bpf_map__key_size(map), vsz,
                                IsPerCpu(bpf_map__type(map)), bpf_map__max_entries(map));
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  } catch (const Napi::Error& e) {
    return Rejected(env, e);
  }
}

class IterWorker : public PromiseWorker {
 public:
  IterWorker(Napi::Env env, BpfObject* obj, std::string name, int link_fd)
      : PromiseWorker(env, obj, "kerntap.runIter"), name_(std::move(name)), link_fd_(link_fd) {}

  void Execute() override {
    int fd = bpf_iter_create(link_fd_);
    if (fd < 0) {
      int err = errno;
      return Fail(err, "creating iterator " + name_ + ": " + ErrText(err));
    }
    std::vector<uint8_t> buf(64 * 1024);
    for (;;) {
      ssize_t n = read(fd, buf.data(), buf.size());
      if (n == 0) break;
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        int err = errno;
        close(fd);
        return Fail(err, "reading iterator " + name_ + ": " + ErrText(err));
      }
      data_.insert(data_.end(), buf.data(), buf.data() + n);
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
  try {
    CheckOpen(env);
    std::string name = StringArg(info, 0, "runIter: program name");
    auto it = iter_links_.find(name);
    if (it == iter_links_.end()) {
      struct bpf_program* prog = bpf_object__find_program_by_name(obj_, name.c_str());
      std::string why = !prog ? "no program named " + name
                        : !IsIter(prog) ? "program " + name + " is not an iterator"
                        : bpf_program__fd(prog) < 0 ? "iterator " + name + " is not loaded"
                                                    : "iterator " + name + " is not attached (call attach() first)";
      throw MakeError(env, "ENOENT", Basename(path_) + ": " + why, ENOENT);
    }
    auto* w = new IterWorker(env, this, name, bpf_link__fd(it->second));
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  } catch (const Napi::Error& e) {
    return Rejected(env, e);
  }
}

Napi::Value BpfObject::UpdateElem(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  std::string name = StringArg(info, 0, "updateElem: map name");
  struct bpf_map* map = FindMap(env, name);
  if (info.Length() < 3) throw Napi::TypeError::New(env, "updateElem(mapName, key, value)");
  auto key = Bytes(env, info[1], "key");
  auto value = Bytes(env, info[2], "value");
  size_t ksz = bpf_map__key_size(map), vsz = bpf_map__value_size(map);
  if (key.second != ksz || value.second != vsz) {
    throw MakeError(env, "EINVAL", "updating map " + name + ": key/value must be " + std::to_string(ksz) + "/" +
                                       std::to_string(vsz) + " bytes, got " + std::to_string(key.second) + "/" +
                                       std::to_string(value.second), EINVAL);
  }
  std::vector<uint8_t> buf;
  const void* v = value.first;
  if (IsPerCpu(bpf_map__type(map))) {  // the same value on every possible CPU
    size_t stride = (vsz + 7) & ~static_cast<size_t>(7);
    buf.assign(stride * ncpu_, 0);
    for (int c = 0; c < ncpu_; c++) memcpy(buf.data() + c * stride, value.first, vsz);
    v = buf.data();
  }
  // updateElem(map, key, value, true): only if the key is absent; false if it is there.
  bool only_new = info.Length() > 3 && info[3].ToBoolean().Value();
  if (bpf_map_update_elem(bpf_map__fd(map), key.first, v, only_new ? BPF_NOEXIST : BPF_ANY) != 0) {
    int err = errno;
    if (only_new && err == EEXIST) return Napi::Boolean::New(env, false);
    throw ErrnoError(env, err, "updating map " + name + ": " + ErrText(err));
  }
  return Napi::Boolean::New(env, true);
}

// Removes the given keys and returns the values they had when removed
// (per-CPU copies summed per u64 word), atomically per key where the kernel
// can (lookup-and-delete on hashes, 5.14+), else by a lookup then a delete.
Napi::Value BpfObject::TakeElems(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  std::string name = StringArg(info, 0, "takeElems: map name");
  struct bpf_map* map = FindMap(env, name);
  if (info.Length() < 2) throw Napi::TypeError::New(env, "takeElems(mapName, keys)");
  auto keys = Bytes(env, info[1], "keys");
  const size_t ksz = bpf_map__key_size(map), vsz = bpf_map__value_size(map);
  if (ksz == 0 || keys.second % ksz != 0 || vsz % 8 != 0) {
    throw MakeError(env, "EINVAL", "taking from map " + name + ": keys must be a multiple of " + std::to_string(ksz) +
                                       " bytes and values of 8", EINVAL);
  }
  const bool percpu = IsPerCpu(bpf_map__type(map));
  const size_t copies = percpu ? static_cast<size_t>(ncpu_) : 1, words = vsz / 8;
  const size_t n = keys.second / ksz;
  const int fd = bpf_map__fd(map);
  std::vector<uint64_t> buf(words * copies);
  Napi::Uint8Array found = Napi::Uint8Array::New(env, n);
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, n * words * 8);
  uint64_t* out = static_cast<uint64_t*>(ab.Data());
  memset(out, 0, n * words * 8);
  bool atomic = !percpu;  // no lookup-and-delete for per-CPU hashes before 6.x
  for (size_t i = 0; i < n; i++) {
    const uint8_t* key = keys.first + i * ksz;
    int rc = -1, err = 0;
    if (atomic) {
      rc = bpf_map_lookup_and_delete_elem(fd, key, buf.data());
      err = rc ? errno : 0;
      if (rc && (err == EINVAL || err == ENOTSUP || err == kENOTSUPP)) atomic = false;
    }
    if (!atomic) {
      rc = bpf_map_lookup_elem(fd, key, buf.data());
      err = rc ? errno : 0;
      if (rc == 0 && bpf_map_delete_elem(fd, key) != 0 && errno != ENOENT) err = errno, rc = -1;
    }
    if (rc != 0) {
      if (err == ENOENT) continue;
      throw ErrnoError(env, err, "taking from map " + name + ": " + ErrText(err));
    }
    found[i] = 1;
    for (size_t c = 0; c < copies; c++)
      for (size_t w = 0; w < words; w++) out[i * words + w] += buf[c * words + w];
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("found", found);
  result.Set("values", Napi::BigUint64Array::New(env, n * words, ab, 0));
  return result;
}

Napi::Value BpfObject::DeleteKeys(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  std::string name = StringArg(info, 0, "deleteKeys: map name");
  struct bpf_map* map = FindMap(env, name);
  if (info.Length() < 2) throw Napi::TypeError::New(env, "deleteKeys(mapName, keys)");
  auto keys = Bytes(env, info[1], "keys");
  size_t ksz = bpf_map__key_size(map);
  if (ksz == 0 || keys.second % ksz != 0) {
    throw MakeError(env, "EINVAL", "deleting from map " + name + ": keys must be a multiple of " + std::to_string(ksz) +
                                       " bytes, got " + std::to_string(keys.second), EINVAL);
  }
  const int fd = bpf_map__fd(map);
  const size_t total = keys.second / ksz;
  size_t done = 0, deleted = 0;
  bool batch = true;
  // The kernel deletes keys in order and stops at the first failure, e.g. a
  // key that is not there (ENOENT): count what went, skip that key, go on.
  while (batch && done < total) {
    uint32_t n = static_cast<uint32_t>(std::min<size_t>(total - done, UINT32_MAX));
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    int rc = bpf_map_delete_batch(fd, keys.first + done * ksz, &n, &opts);
    if (rc == 0) {
      deleted += n;
      done += n;
      break;
    }
    int err = errno;
    // The count is written back only once the kernel has walked the keys;
    // errors found earlier (no batch support) leave it as passed in, and a
    // walk that failed on key i reports i < n.
    uint32_t asked = static_cast<uint32_t>(std::min<size_t>(total - done, UINT32_MAX));
    if (n >= asked) n = 0;
    deleted += n;
    done += n;
    if (err == ENOENT) {
      done++;  // the key that was not there
    } else if (err == EINVAL || err == ENOTSUP || err == kENOTSUPP) {
      batch = false;  // no batch delete for this map type (or this key is refused): one at a time
    } else if (err != EINTR) {
      throw ErrnoError(env, err, "deleting from map " + name + ": " + ErrText(err));
    }
  }
  for (; done < total; done++) {
    if (bpf_map_delete_elem(fd, keys.first + done * ksz) == 0) {
      deleted++;
    } else if (errno != ENOENT) {
      int err = errno;
      throw ErrnoError(env, err, "deleting from map " + name + ": " + ErrText(err));
    }
  }
  return Napi::Number::New(env, static_cast<double>(deleted));
}

Napi::Value BpfObject::Close(const Napi::CallbackInfo& info) {
  close_requested_ = true;
  if (inflight_ == 0) Destroy();  // else the last worker to finish does it
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
                         InstanceMethod("takeElems", &BpfObject::TakeElems),
                         InstanceMethod("close", &BpfObject::Close),
                     });
}

// ---------------------------------------------------------------------------
// Module functions.

Napi::Value NumPossibleCpus(const Napi::CallbackInfo& info) {
  int n = libbpf_num_possible_cpus();
  if (n < 1) throw ErrnoError(info.Env(), -n, "cannot count possible CPUs: " + ErrText(-n));
  return Napi::Number::New(info.Env(), n);
}

std::mutex g_btf_mutex;
struct btf* g_vmlinux_btf = nullptr;

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
    if (access(kBtfPath, R_OK) != 0) {
      throw MakeError(env, "ENOBTF", std::string("kernel BTF not found at ") + kBtfPath +
                                         ": kerntap needs a kernel built with CONFIG_DEBUG_INFO_BTF=y");
    }
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

// Gives freed heap pages back to the kernel (glibc keeps them otherwise):
// loading parses the kernel BTF, and batch reads use large buffers.
Napi::Value TrimMemory(const Napi::CallbackInfo& info) {
#ifdef __GLIBC__
  return Napi::Boolean::New(info.Env(), malloc_trim(0) == 1);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

Napi::Value EnableStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
  if (fd < 0) {
    int err = errno;
    bool perm = err == EPERM || err == EACCES;
    Napi::Error e = ErrnoError(env, err, std::string("enabling BPF run-time stats: ") + ErrText(err) +
                                             (perm ? ": needs CAP_SYS_ADMIN (or root)" : ""));
    if (perm) e.Set("capability", Napi::String::New(env, "CAP_SYS_ADMIN"));
    throw e;
  }
  return Napi::Number::New(env, fd);
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "closeFd(fd)");
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (fd < 0 || close(fd) != 0) {
    int err = fd < 0 ? EBADF : errno;
    throw ErrnoError(env, err, "closing fd " + std::to_string(fd) + ": " + ErrText(err));
  }
  return env.Undefined();
}

Napi::Value LibbpfVersion(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), std::to_string(LIBBPF_MAJOR_VERSION) + "." + std::to_string(LIBBPF_MINOR_VERSION));
}

// Test hook (not part of the typed interface): entries per lookup_batch call,
// small values force hash buckets larger than a batch (ENOSPC handling).
Napi::Value SetBatchSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t previous = g_batch.load();
  if (info.Length() > 0 && info[0].IsNumber()) {
    uint32_t n = info[0].As<Napi::Number>().Uint32Value();
    g_batch.store(n ? n : kDefaultBatch);
  }
  return Napi::Number::New(env, previous);
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  const char* debug = std::getenv("KERNTAP_LIBBPF_DEBUG");
  g_debug = debug && strcmp(debug, "1") == 0;
  libbpf_set_print(LibbpfPrint);
#ifdef __GLIBC__
  // Map reads run on libuv's worker threads; glibc gives each thread an
  // arena of its own, which keeps ~20 MB of freed buffers resident. One
  // more arena is enough for a few reads a second.
  mallopt(M_ARENA_MAX, 2);
#endif
  exports.Set("BpfObject", BpfObject::Init(env));
  exports.Set("numPossibleCpus", Napi::Function::New(env, NumPossibleCpus));
  exports.Set("btfHasType", Napi::Function::New(env, BtfHasType));
  exports.Set("enableStats", Napi::Function::New(env, EnableStats));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd));
  exports.Set("libbpfVersion", Napi::Function::New(env, LibbpfVersion));
  exports.Set("releaseKernelBtf", Napi::Function::New(env, ReleaseKernelBtf));
  exports.Set("trimMemory", Napi::Function::New(env, TrimMemory));
  exports.Set("_setBatchSize", Napi::Function::New(env, SetBatchSize));
  return exports;
}

}  // namespace

NODE_API_MODULE(kerntap_native, InitModule)
