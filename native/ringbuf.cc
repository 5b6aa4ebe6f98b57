// Ring buffers: drainRing hands userspace every record a BPF ring buffer
// holds now, on the libuv thread pool. The caller drains on its own clock
// (kerntap top: every refresh), so no epoll wait and no thread of its own.
#include "kerntap.h"

#include <cerrno>
#include <cstring>

namespace kerntap {

namespace {

// Stops one drain after this many bytes, so a producer faster than the
// consumer cannot keep a worker busy; the rest waits for the next drain.
constexpr size_t kMaxDrainBytes = 8 << 20;

struct Drained {
  std::vector<uint8_t> data;
};

// Each record becomes [u32 length][bytes][padding to 8].
int OnRecord(void* ctx, void* rec, size_t size) {
  auto* out = static_cast<Drained*>(ctx);
  uint32_t len = static_cast<uint32_t>(size);
  size_t at = out->data.size();
  size_t padded = (4 + size + 7) & ~size_t{7};
  out->data.resize(at + padded, 0);
  memcpy(out->data.data() + at, &len, 4);
  memcpy(out->data.data() + at + 4, rec, size);
  return out->data.size() >= kMaxDrainBytes ? -E2BIG : 0;
}

class DrainWorker : public PromiseWorker {
 public:
  DrainWorker(Napi::Env env, BpfObject* obj, std::string name, RingState* ring)
      : PromiseWorker(env, obj, "kerntap.drainRing"), name_(std::move(name)), ring_(ring) {}

  void Execute() override {
    ring_->ctx = &out_;
    int n = ring_buffer__consume(ring_->rb);
    ring_->ctx = nullptr;
    if (n < 0 && n != -E2BIG) Fail(-n, "reading ring buffer " + name_ + ": " + ErrText(-n));
  }

  void OnOK() override {
    ring_->busy = false;
    deferred_.Resolve(Napi::Buffer<uint8_t>::Copy(Env(), out_.data.data(), out_.data.size()));
  }
  void OnError(const Napi::Error& e) override {
    ring_->busy = false;
    PromiseWorker::OnError(e);
  }

 private:
  std::string name_;
  RingState* ring_;
  Drained out_;
};

int Dispatch(void* ctx, void* rec, size_t size) {
  auto* ring = static_cast<RingState*>(ctx);
  return ring->ctx ? OnRecord(ring->ctx, rec, size) : 0;
}

}  // namespace

Napi::Value BpfObject::DrainRing(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    CheckOpen(env);
    std::string name = StringArg(info, 0, "drainRing: map name");
    struct bpf_map* map = FindMap(env, name);
    if (bpf_map__type(map) != BPF_MAP_TYPE_RINGBUF) {
      throw MakeError(env, "EINVAL", Basename(path_) + ": map " + name + " is not a ring buffer", EINVAL);
    }
    auto it = rings_.find(name);
    if (it == rings_.end()) {
      auto ring = std::make_unique<RingState>();
      ring->rb = ring_buffer__new(bpf_map__fd(map), Dispatch, ring.get(), nullptr);
      if (!ring->rb) {
        int err = errno;
        throw ErrnoError(env, err, Basename(path_) + ": opening ring buffer " + name + ": " + ErrText(err));
      }
      it = rings_.emplace(name, std::move(ring)).first;
    }
    RingState* ring = it->second.get();
    if (ring->busy) throw MakeError(env, "EBUSY", Basename(path_) + ": ring buffer " + name + " is being drained", EBUSY);
    ring->busy = true;
    return (new DrainWorker(env, this, name, ring))->Start();
  } catch (const Napi::Error& e) {
    return Rejected(env, e);
  }
}

void BpfObject::FreeRings() {
  for (auto& kv : rings_) ring_buffer__free(kv.second->rb);
  rings_.clear();
}

}  // namespace kerntap
