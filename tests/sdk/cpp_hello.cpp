// An out-of-tree C++ plugin on the installed SDK's C++ layer: one object per
// session, which greets its client with its own count of sessions and sends
// back every message with how many it has had.
#include <pier/plugin.hpp>

#include <string>

namespace {

struct Hello : pier::Session {
  unsigned messages = 0;
  void OnConnected(const char* /*peer*/) override { Send("hello from c++\n"); }
  void OnRecv(const void* data, size_t len) override {
    Send("#" + std::to_string(++messages) + " ");
    Send(data, len);
  }
};

}  // namespace

PIER_CPP_PLUGIN("hello_cpp", "1.0.0", Hello);
