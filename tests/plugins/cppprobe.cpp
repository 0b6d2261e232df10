/* Test plugin for the C++ layer (include/pier/plugin.hpp), built as
 * cppprobe17.so (-std=c++17) and cppprobe20.so (-std=c++20), both with
 * -Wall -Wextra -Wpedantic -Werror. On a raw listener, one command a read:
 *   "count"  replies "sent <n>\n": the bytes OnSend reported so far;
 *   "throw"  OnRecv throws std::runtime_error("asked to throw");
 *   "arm"    echoed; at the next reload this session's OnResumed throws
 *            ("asked to throw on resume");
 *   "big"    echoed; at the next reload this session's Save returns 1 MiB + 1
 *            bytes (over what one session may hand over);
 *   other    echoed.
 * OnConnected sends "hello gen=<generation> std=<__cplusplus>\n", OnResumed
 * "resumed gen=<generation> saved=<what Save returned> plugin=<state>\n".
 * OnDisconnected logs "cppprobe: OnDisconnected <sid> <reason text>" (the
 * tests count these lines). A "throw_on_load" key in the config makes
 * OnLoad throw. */
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

#include "pier/plugin.hpp"

namespace {

unsigned g_generation;
std::string g_state;

class Probe : public pier::Plugin {
 public:
  static void OnLoad(const pier::LoadArgs& args) {
    if (std::strstr(args.config_json, "\"throw_on_load\""))
      throw std::runtime_error("the config asks OnLoad to throw");
    g_generation = args.generation;
    g_state = args.state;
  }
  static std::string Save() { return "from-gen-" + std::to_string(g_generation); }
};

class ProbeSession : public pier::Session {
 public:
  void OnConnected(const char*) override {
    Send("hello gen=" + std::to_string(g_generation) + " std=" + std::to_string(__cplusplus) +
         "\n");
  }
  void OnResumed(const std::string& saved) override {
    if (saved == "armed")
      throw std::runtime_error("asked to throw on resume");
    Send("resumed gen=" + std::to_string(g_generation) + " saved=" + saved + " plugin=" +
         g_state + "\n");
  }
  void OnRecv(const void* data, size_t len) override {
    std::string cmd(static_cast<const char*>(data), len);
    received_ += len;
    if (cmd == "count")
      Send("sent " + std::to_string(sent_) + "\n");
    else if (cmd == "throw")
      throw std::runtime_error("asked to throw");
    else {
      armed_ = armed_ || cmd == "arm";
      big_ = big_ || cmd == "big";
      Send(data, len);
    }
  }
  void OnSend(size_t bytes) override { sent_ += bytes; }
  void OnDisconnected(pier_reason reason) override {
    pier::Plugin::Log(PIER_LOG_INFO, "cppprobe: OnDisconnected %016llx %s",
                      (unsigned long long)Id(), Host()->reason_text(reason));
  }
  std::string Save() override {
    if (big_)
      return std::string((1u << 20) + 1, 'x');
    return armed_ ? "armed" : "recv" + std::to_string(received_);
  }

 private:
  size_t sent_ = 0, received_ = 0;
  bool armed_ = false, big_ = false;
};

}  // namespace

PIER_CPP_PLUGIN("cppprobe", "1.0.0", ProbeSession, Probe);
