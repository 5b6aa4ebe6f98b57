// Module functions (CPU count, run-time stats, memory) and process-wide
// setup: the libbpf print callback and the malloc arena limit and thresholds.
#include "kerntap.h"

#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <cerrno>

namespace kerntap {

namespace {

Napi::Value NumPossibleCpus(const Napi::CallbackInfo& info) {
  int n = libbpf_num_possible_cpus();
  if (n < 1) throw ErrnoError(info.Env(), -n, "cannot count possible CPUs: " + ErrText(-n));
  return Napi::Number::New(info.Env(), n);
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
  InitLibbpfPrint();
#ifdef __GLIBC__
  // Map reads run on libuv's worker threads; glibc gives each thread an
  // arena of its own, which keeps ~20 MB of freed buffers resident. One
  // more arena is enough for a few reads a second. (Node's own threads
  // have made ~5 arenas by now: the cap only stops more.)
  mallopt(M_ARENA_MAX, 2);
  // Fixed thresholds instead of glibc's adaptive ones: once a large buffer
  // (a batch read's) is freed, glibc raises both to its size, so later
  // buffers come from the worker threads' arenas, and free space at an
  // arena's top is kept; malloc_trim() does not return that top either
  // (it does only the main arena's). At 1 000 cgroups and 10 000
  // connections that was ~10 MB of free, resident memory. Buffers of
  // 128 KiB and more are mmap()ed and unmapped when freed: a few per poll.
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  mallopt(M_TRIM_THRESHOLD, 128 * 1024);
#endif
  exports.Set("BpfObject", BpfObject::Init(env));
  exports.Set("numPossibleCpus", Napi::Function::New(env, NumPossibleCpus));
  exports.Set("btfHasType", Napi::Function::New(env, BtfHasType));
  exports.Set("objectBtf", Napi::Function::New(env, ObjectBtf));
  exports.Set("enableStats", Napi::Function::New(env, EnableStats));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd));
  exports.Set("libbpfVersion", Napi::Function::New(env, LibbpfVersion));
  exports.Set("releaseKernelBtf", Napi::Function::New(env, ReleaseKernelBtf));
  exports.Set("trimMemory", Napi::Function::New(env, TrimMemory));
  exports.Set("_setBatchSize", Napi::Function::New(env, SetBatchSize));
  return exports;
}

}  // namespace

}  // namespace kerntap

using kerntap::InitModule;
NODE_API_MODULE(kerntap_native, InitModule)
