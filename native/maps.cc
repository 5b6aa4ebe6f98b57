// Whole-map reads: bpf_map_lookup_batch in growing chunks (or key by key
// where a map type has no batch operations), per-CPU copies summed per u64
// word, on the libuv thread pool.
#include "kerntap.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace kerntap {

std::atomic<uint32_t> g_batch{kDefaultBatch};

bool IsPerCpu(enum bpf_map_type t) {
  return t == BPF_MAP_TYPE_PERCPU_HASH || t == BPF_MAP_TYPE_PERCPU_ARRAY || t == BPF_MAP_TYPE_LRU_PERCPU_HASH ||
         t == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

namespace {

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
    // The first chunk is no larger than the map either: a small per-CPU map
    // on a 192-CPU node would otherwise get a buffer of batch x value x 192
    // (megabytes) at every poll, which the allocator keeps.
    uint32_t by_bytes = static_cast<uint32_t>(std::max<size_t>(1, kMaxChunkBytes / (value_size_ * (percpu_ ? ncpu_ : 1))));
    uint32_t max_chunk = std::max<uint32_t>(1, std::min({max_entries_, by_bytes, kMaxChunk}));
    uint32_t first = std::min(chunk_, max_chunk);
    int rc = ReadWholeMap(fd_, key_size_, value_size_, percpu_, ncpu_, first, max_chunk, &result_);
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

}  // namespace

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
    return (new ReadMapWorker(env, this, name, bpf_map__fd(map), bpf_map__key_size(map), vsz,
                              IsPerCpu(bpf_map__type(map)), bpf_map__max_entries(map)))
        ->Start();
  } catch (const Napi::Error& e) {
    return Rejected(env, e);
  }
}

}  // namespace kerntap
