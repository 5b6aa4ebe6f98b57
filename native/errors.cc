// libbpf log capture, error text, and the JS argument helpers every file uses.
#include "kerntap.h"

#include <cctype>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace kerntap {

const char kBtfPath[] = "/sys/kernel/btf/vmlinux";

namespace {

// What libbpf printed recently (warnings), for error messages.
constexpr size_t kPrintKeep = 16 * 1024;

bool g_debug = false;
std::mutex g_print_mutex;
std::string g_printed;

// libbpf reports through one process-wide callback. Its warnings are kept
// (bounded) so that error messages can quote the last one; nothing goes to
// stderr unless KERNTAP_LIBBPF_DEBUG=1.
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

std::string ErrnoName(int err) {
  if (err == kENOTSUPP) return "ENOTSUPP";
  const char* name = strerrorname_np(err);
  return name ? name : "E" + std::to_string(err);
}

}  // namespace

void InitLibbpfPrint() {
  const char* debug = std::getenv("KERNTAP_LIBBPF_DEBUG");
  g_debug = debug && strcmp(debug, "1") == 0;
  libbpf_set_print(LibbpfPrint);
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

std::string ErrText(int err) {
  if (err == kENOTSUPP) return "operation not supported";
  std::string s = strerror(err);
  if (!s.empty()) s[0] = static_cast<char>(tolower(s[0]));
  return s;
}

Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message, int err) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  if (err) e.Set("errno", Napi::Number::New(env, err));
  return e;
}

Napi::Error ErrnoError(Napi::Env env, int err, const std::string& message) {
  return MakeError(env, ErrnoName(err), message, err);
}

Napi::Error NoKernelBtf(Napi::Env env) {
  return MakeError(env, "ENOBTF", std::string("kernel BTF not found at ") + kBtfPath +
                                      ": kerntap needs a kernel built with CONFIG_DEBUG_INFO_BTF=y");
}

std::string Basename(const std::string& p) {
  size_t s = p.rfind('/');
  return s == std::string::npos ? p : p.substr(s + 1);
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

Napi::Value Rejected(Napi::Env env, const Napi::Error& e) {
  auto d = Napi::Promise::Deferred::New(env);
  d.Reject(e.Value());
  return d.Promise();
}

}  // namespace kerntap
