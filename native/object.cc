// The BpfObject ObjectWrap: open, options before load, load (verifier
// errors), attach, close, and the program and map info for self-metrics.
#include "kerntap.h"


#include <linux/bpf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <thread>

namespace kerntap {

namespace {

// Default kernel verifier log buffer per program (the `logSize` option).
// Kernels since 6.4 keep the tail of the log when it does not fit.
constexpr size_t kDefaultLogSize = 16 * 1024;
// How much of the verifier log travels on the error as `verifierLog`.
constexpr size_t kVerifierLogKeep = 4 * 1024;

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

// bpf_obj_get_info_by_fd for a program or a map (`what` "program x").
template <typename Info>
Info ObjInfo(Napi::Env env, int fd, const std::string& what) {
  Info info;
  memset(&info, 0, sizeof info);
  __u32 len = sizeof info;
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) {
    int err = errno;
    throw ErrnoError(env, err, what + ": cannot get info: " + ErrText(err));
  }
  return info;
}

}  // namespace

bool IsIter(struct bpf_program* prog) {
  const char* sec = bpf_program__section_name(prog);
  return sec && strncmp(sec, "iter/", 5) == 0;
}

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
  if (access(kBtfPath, R_OK) != 0) throw NoKernelBtf(env);

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
  // A map the kernel would not create ("map 'x': failed to create: ..."):
  // name it and what it asked for, which is what the user can change.
  size_t m = printed.rfind("map '");
  if (m != std::string::npos && printed.find("failed to create", m) != std::string::npos) {
    size_t q = printed.find("'", m + 5);
    std::string name = q == std::string::npos ? "" : printed.substr(m + 5, q - m - 5);
    struct bpf_map* map = bpf_object__find_map_by_name(obj_, name.c_str());
    if (map) {
      const bool percpu = IsPerCpu(bpf_map__type(map));
      const double value = ((bpf_map__value_size(map) + 7) & ~7u) * (percpu ? static_cast<double>(ncpu_) : 1.0);
      const double bytes = static_cast<double>(bpf_map__max_entries(map)) * (bpf_map__key_size(map) + value);
      char wanted[64];
      snprintf(wanted, sizeof wanted, "%.1f MiB", bytes / (1 << 20));
      std::string why = err == EPERM ? " (before Linux 5.11 maps count against RLIMIT_MEMLOCK: raise it, or give CAP_SYS_RESOURCE)" : "";
      Napi::Error e = ErrnoError(env, err, what_ + ": cannot create map " + name + ": " + ErrText(err) + ": it wanted about " +
                                               wanted + " (" + std::to_string(bpf_map__max_entries(map)) + " entries of " +
                                               std::to_string(bpf_map__key_size(map)) + " + " + std::to_string(bpf_map__value_size(map)) +
                                               " bytes" + (percpu ? " x " + std::to_string(ncpu_) + " possible CPUs" : "") + ")" + why);
      e.Set("map", Napi::String::New(env, name));
      throw e;
    }
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
  // Detaching a classic tracepoint waits for an RCU grace period (the
  // kernel's perf_trace_event_unreg): one after the other, 17 syscall hooks
  // take over a second. Detached all at once, the waits overlap.
  if (links_.size() > 2) {
    std::vector<std::thread> detach;
    detach.reserve(links_.size());
    for (auto* l : links_) detach.emplace_back([l] { bpf_link__destroy(l); });
    for (auto& t : detach) t.join();
  } else {
    for (auto* l : links_) bpf_link__destroy(l);
  }
  links_.clear();
  FreeRings();
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
  bpf_object__for_each_program(prog, obj_) {
    int fd = bpf_program__fd(prog);
    if (fd < 0) continue;  // not loaded (skipPrograms)
    auto pinfo = ObjInfo<struct bpf_prog_info>(env, fd, std::string("program ") + bpf_program__name(prog));
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", bpf_program__name(prog));
    o.Set("section", bpf_program__section_name(prog));
    o.Set("id", Napi::Number::New(env, pinfo.id));
    o.Set("runTimeNs", Napi::BigInt::New(env, static_cast<uint64_t>(pinfo.run_time_ns)));
    o.Set("runCount", Napi::BigInt::New(env, static_cast<uint64_t>(pinfo.run_cnt)));
    o.Set("recursionMisses", Napi::BigInt::New(env, static_cast<uint64_t>(pinfo.recursion_misses)));
    out.Set(out.Length(), o);
  }
  return out;
}

Napi::Value BpfObject::Maps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  Napi::Array out = Napi::Array::New(env);
  struct bpf_map* map;
  bpf_object__for_each_map(map, obj_) {
    int fd = bpf_map__fd(map);
    if (fd < 0) continue;  // not created (autocreate off)
    auto minfo = ObjInfo<struct bpf_map_info>(env, fd, std::string("map ") + bpf_map__name(map));
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", bpf_map__name(map));
    o.Set("id", Napi::Number::New(env, minfo.id));
    o.Set("type", Napi::Number::New(env, minfo.type));
    o.Set("keySize", Napi::Number::New(env, minfo.key_size));
    o.Set("valueSize", Napi::Number::New(env, minfo.value_size));
    o.Set("maxEntries", Napi::Number::New(env, minfo.max_entries));
    o.Set("flags", Napi::Number::New(env, minfo.map_flags));
    o.Set("memlock", Napi::Number::New(env, static_cast<double>(FdinfoMemlock(fd))));
    o.Set("internal", Napi::Boolean::New(env, bpf_map__is_internal(map)));  // .rodata, .bss, .data, .kconfig
    out.Set(out.Length(), o);
  }
  return out;
}

Napi::Value BpfObject::Btf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckOpen(env);
  return DescribeObjectBtf(env, obj_, Basename(path_));
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
                         InstanceMethod("drainRing", &BpfObject::DrainRing),
                         InstanceMethod("updateElem", &BpfObject::UpdateElem),
                         InstanceMethod("deleteKeys", &BpfObject::DeleteKeys),
                         InstanceMethod("takeElems", &BpfObject::TakeElems),
                         InstanceMethod("btf", &BpfObject::Btf),
                         InstanceMethod("close", &BpfObject::Close),
                     });
}

}  // namespace kerntap
