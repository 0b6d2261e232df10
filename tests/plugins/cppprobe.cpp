/* Test plugin for the C++ layer (include/pier/plugin.hpp), built as
 * cppprobe17.so (-std=c++17) and cppprobe20.so (-std=c++20), both with
 * -Wall -Wextra -Wpedantic -Werror. On a raw listener, one command a read:
 *   "count"  replies "sent <n>\n": the bytes OnSend reported so far;
 *   "throw"  OnRecv throws std::runtime_error("asked to throw");
 *   "arm"    echoed; at the next reload this session's OnResumed throws
 *            ("asked to throw on resume");
 *   "big"    echoed; at the next reload this session's Save returns 1 MiB + 1
 *            bytes (over what one session may hand over);
 *   "sub S", "unsub S", "pub S DATA", "node"
 *            the cluster bus through pier::Plugin: replies "rc <cmd> <code>\n"
 *            ("node" replies "node <name or (none)>\n");
 *   other    echoed.
 * Every bus message goes to every session as "msg <subject> <data> <reply or
 * ->\n" (a message with a reply address is answered "re:<data>"), every
 * node change as "node <name> up|down\n". 
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
  static void OnMessage(const char* subject, const void* data, size_t len,
                        const char* reply_to) {
    std::string body(static_cast<const char*>(data), len);
    if (reply_to)
      Respond(reply_to, "re:" + body);
    ToAll("msg " + std::string(subject) + " " + body + " " + (reply_to ? "reply" : "-") + "\n");
  }
  static void OnNode(const char* node, bool up) {
    ToAll("node " + std::string(node) + (up ? " up\n" : " down\n"));
  }
  static void ToAll(const std::string& line) {
    const pier_host* h = Host();
    pier_sid sids[64];
    size_t n = h->sessions(h, sids, 64);
    h->broadcast(h, sids, n < 64 ? n : 64, line.data(), line.size());
  }
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
    else if (cmd.rfind("sub ", 0) == 0)
      Send("rc sub " + std::to_string(pier::Plugin::Subscribe(cmd.c_str() + 4)) + "\n");
    else if (cmd.rfind("unsub ", 0) == 0)
      Send("rc unsub " + std::to_string(pier::Plugin::Unsubscribe(cmd.c_str() + 6)) + "\n");
    else if (cmd.rfind("pub ", 0) == 0) {
      std::string rest = cmd.substr(4), subject = rest.substr(0, rest.find(' '));
      std::string body = rest.find(' ') == std::string::npos ? "" : rest.substr(rest.find(' ') + 1);
      Send("rc pub " + std::to_string(pier::Plugin::Publish(subject.c_str(), body)) + "\n");
    } else if (cmd == "node")
      Send(std::string("node ") + (pier::Plugin::Node() ? pier::Plugin::Node() : "(none)") + "\n");
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
