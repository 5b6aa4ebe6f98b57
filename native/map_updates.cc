// Writes by key: updateElem (on the JS thread: one syscall), and takeElems
// and deleteKeys, which may touch thousands of keys, on the libuv thread pool.
#include "kerntap.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace kerntap {

namespace {

// Removes the given keys and keeps the values they had when removed
// (per-CPU copies summed per u64 word), atomically per key where the kernel
// can (lookup-and-delete on hashes, 5.14+), else by a lookup then a delete.
class TakeElemsWorker : public PromiseWorker {
 public:
  TakeElemsWorker(Napi::Env env, BpfObject* obj, std::string name, int fd, const uint8_t* keys, size_t n,
                  size_t key_size, size_t words, bool percpu)
      : PromiseWorker(env, obj, "kerntap.takeElems"), name_(std::move(name)), fd_(fd), keys_(keys, keys + n * key_size),
        n_(n), key_size_(key_size), words_(words), percpu_(percpu), copies_(percpu ? obj->ncpu() : 1) {}

  void Execute() override {
    std::vector<uint64_t> buf(words_ * copies_);
    found_.assign(n_, 0);
    values_.assign(n_ * words_, 0);
    bool atomic = !percpu_;  // no lookup-and-delete for per-CPU hashes before 6.x
    for (size_t i = 0; i < n_; i++) {
      const uint8_t* key = keys_.data() + i * key_size_;
      int rc = -1, err = 0;
      if (atomic) {
        rc = bpf_map_lookup_and_delete_elem(fd_, key, buf.data());
        err = rc ? errno : 0;
        if (rc && (err == EINVAL || err == ENOTSUP || err == kENOTSUPP)) atomic = false;
      }
      if (!atomic) {
        rc = bpf_map_lookup_elem(fd_, key, buf.data());
        err = rc ? errno : 0;
        if (rc == 0 && bpf_map_delete_elem(fd_, key) != 0 && errno != ENOENT) err = errno, rc = -1;
      }
      if (rc != 0) {
        if (err == ENOENT) continue;
        return Fail(err, "taking from map " + name_ + ": " + ErrText(err));
      }
      found_[i] = 1;
      for (size_t c = 0; c < copies_; c++)
        for (size_t w = 0; w < words_; w++) values_[i * words_ + w] += buf[c * words_ + w];
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object result = Napi::Object::New(env);
    Napi::Uint8Array found = Napi::Uint8Array::New(env, n_);
    if (n_) memcpy(found.Data(), found_.data(), n_);
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, values_.size() * 8);
    if (!values_.empty()) memcpy(ab.Data(), values_.data(), values_.size() * 8);
    result.Set("found", found);
    result.Set("values", Napi::BigUint64Array::New(env, values_.size(), ab, 0));
    deferred_.Resolve(result);
  }

 private:
  std::string name_;
  int fd_;
  std::vector<uint8_t> keys_;
  size_t n_, key_size_, words_;
  bool percpu_;
  size_t copies_;
  std::vector<uint8_t> found_;
  std::vector<uint64_t> values_;
};

class DeleteKeysWorker : public PromiseWorker {
 public:
  DeleteKeysWorker(Napi::Env env, BpfObject* obj, std::string name, int fd, const uint8_t* keys, size_t n,
                   size_t key_size)
      : PromiseWorker(env, obj, "kerntap.deleteKeys"), name_(std::move(name)), fd_(fd),
        keys_(keys, keys + n * key_size), total_(n), key_size_(key_size) {}

  void Execute() override {
    size_t done = 0;
    bool batch = true;
    // The kernel deletes keys in order and stops at the first failure, e.g. a
    // key that is not there (ENOENT): count what went, skip that key, go on.
    while (batch && done < total_) {
      uint32_t asked = static_cast<uint32_t>(std::min<size_t>(total_ - done, UINT32_MAX));
      uint32_t n = asked;
      LIBBPF_OPTS(bpf_map_batch_opts, opts);
      if (bpf_map_delete_batch(fd_, keys_.data() + done * key_size_, &n, &opts) == 0) {
        deleted_ += n;
        done += n;
        break;
      }
      int err = errno;
      // The count is written back only once the kernel has walked the keys;
      // errors found earlier (no batch support) leave it as passed in, and a
      // walk that failed on key i reports i < n.
      if (n >= asked) n = 0;
      deleted_ += n;
      done += n;
      if (err == ENOENT) {
        done++;  // the key that was not there
      } else if (err == EINVAL || err == ENOTSUP || err == kENOTSUPP) {
        batch = false;  // no batch delete for this map type (or this key is refused): one at a time
      } else if (err != EINTR) {
        return Fail(err, "deleting from map " + name_ + ": " + ErrText(err));
      }
    }
    for (; done < total_; done++) {
      if (bpf_map_delete_elem(fd_, keys_.data() + done * key_size_) == 0) {
        deleted_++;
      } else if (errno != ENOENT) {
        int err = errno;
        return Fail(err, "deleting from map " + name_ + ": " + ErrText(err));
      }
    }
  }

  void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), static_cast<double>(deleted_))); }

 private:
  std::string name_;
  int fd_;
  std::vector<uint8_t> keys_;
  size_t total_, key_size_;
  size_t deleted_ = 0;
};

}  // namespace

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

Napi::Value BpfObject::TakeElems(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
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
    return (new TakeElemsWorker(env, this, name, bpf_map__fd(map), keys.first, keys.second / ksz, ksz, vsz / 8,
                                IsPerCpu(bpf_map__type(map))))
        ->Start();
  } catch (const Napi::Error& e) {
    return Rejected(env, e);
  }
}

Napi::Value BpfObject::DeleteKeys(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    CheckOpen(env);
    std::string name = StringArg(info, 0, "deleteKeys: map name");
    struct bpf_map* map = FindMap(env, name);
    if (info.Length() < 2) throw Napi::TypeError::New(env, "deleteKeys(mapName, keys)");
    auto keys = Bytes(env, info[1], "keys");
    size_t ksz = bpf_map__key_size(map);
    if (ksz == 0 || keys.second % ksz != 0) {
      throw MakeError(env, "EINVAL", "deleting from map " + name + ": keys must be a multiple of " +
                                         std::to_string(ksz) + " bytes, got " + std::to_string(keys.second), EINVAL);
    }
    return (new DeleteKeysWorker(env, this, name, bpf_map__fd(map), keys.first, keys.second / ksz, ksz))->Start();
  } catch (const Napi::Error& e) {
    return Rejected(env, e);
  }
}

}  // namespace kerntap
