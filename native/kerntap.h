// Shared declarations of the kerntap native addon (a thin layer over libbpf).
// What each file holds:
//   errors.cc  libbpf log capture, error text, JS argument helpers
//   object.cc  open/load/attach/close: the BpfObject ObjectWrap, program and map info
//   options.cc options applied before load (map sizes and flags, skipped programs, rodata)
//   maps.cc    batched whole-map reads, per-CPU sums (off the event loop)
//   map_updates.cc  updates, takes and deletes by key (takes and deletes off the event loop)
//   iter.cc    BPF iterators (off the event loop)
//   ringbuf.cc BPF ring buffers drained on demand (off the event loop)
//   btf.cc     the object's BTF (map layouts, enums, rodata) and kernel BTF probes
//   module.cc  module functions and process-wide setup
// The TypeScript contract is src/bpf/native.ts.
#pragma once

#include <napi.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace kerntap {

extern const char kBtfPath[];
// The kernel's internal "operation not supported" (not in userspace errno.h).
constexpr int kENOTSUPP = 524;
// Entries per bpf_map_lookup_batch call (the _setBatchSize test hook changes it).
constexpr uint32_t kDefaultBatch = 4096;
extern std::atomic<uint32_t> g_batch;

// errors.cc
void InitLibbpfPrint();
std::string TakePrinted();
std::string Trim(const std::string& s);
std::string LogTail(const std::string& log, int lines);
std::string TailBytes(const std::string& log, size_t keep);
std::string ErrText(int err);
Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message, int err = 0);
Napi::Error ErrnoError(Napi::Env env, int err, const std::string& message);
Napi::Error NoKernelBtf(Napi::Env env);
std::string Basename(const std::string& p);
std::pair<const uint8_t*, size_t> Bytes(Napi::Env env, const Napi::Value& v, const char* what);
std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* what);
Napi::Value Rejected(Napi::Env env, const Napi::Error& e);
bool IsIter(struct bpf_program* prog);
bool IsPerCpu(enum bpf_map_type t);

// A ring buffer opened by drainRing; `ctx` points at the drain in progress.
struct RingState {
  struct ring_buffer* rb = nullptr;
  void* ctx = nullptr;
  bool busy = false;
};

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
  Napi::Value DrainRing(const Napi::CallbackInfo& info);
  Napi::Value UpdateElem(const Napi::CallbackInfo& info);
  Napi::Value DeleteKeys(const Napi::CallbackInfo& info);
  Napi::Value TakeElems(const Napi::CallbackInfo& info);
  Napi::Value Btf(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  void ApplyOptions(Napi::Env env, const Napi::Object& opts);
  void SetRodata(Napi::Env env, const Napi::Object& values);
  void Load(Napi::Env env, size_t log_size);
  struct bpf_map* FindMap(Napi::Env env, const std::string& name);
  void CheckOpen(Napi::Env env);
  void Destroy();
  void FreeRings();

  struct bpf_object* obj_ = nullptr;
  std::string path_;
  std::string what_;  // "loading x.bpf.o"
  std::vector<struct bpf_link*> links_;
  std::map<std::string, struct bpf_link*> iter_links_;
  std::map<std::string, std::unique_ptr<RingState>> rings_;
  bool attached_ = false;
  int ncpu_ = 1;
  int inflight_ = 0;
  bool close_requested_ = false;
};

// A worker that settles a promise; failures carry `code` and `errno`.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, BpfObject* obj, const char* name)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)), obj_(obj) {
    obj_->Acquire();
  }
  ~PromiseWorker() override { obj_->Release(); }
  // Queues the worker and returns its promise.
  Napi::Promise Start() {
    Napi::Promise p = deferred_.Promise();
    Queue();
    return p;
  }

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

// btf.cc: a plain description of an object's BTF (see ObjectBtf in src/bpf/layout.ts).
Napi::Object DescribeObjectBtf(Napi::Env env, struct bpf_object* obj, const std::string& what);
Napi::Value ObjectBtf(const Napi::CallbackInfo& info);
Napi::Value BtfHasType(const Napi::CallbackInfo& info);
Napi::Value ReleaseKernelBtf(const Napi::CallbackInfo& info);

}  // namespace kerntap
