// BPF iterators: runIter reads everything an attached iterator writes, on
// the libuv thread pool.
#include "kerntap.h"

#include <unistd.h>

#include <cerrno>

namespace kerntap {

namespace {

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

}  // namespace

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
    return (new IterWorker(env, this, name, bpf_link__fd(it->second)))->Start();
  } catch (const Napi::Error& e) {
    return Rejected(env, e);
  }
}

}  // namespace kerntap
