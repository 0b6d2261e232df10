/* lobby: a line-based chat lobby, the C++ example (include/pier/plugin.hpp).
 * On a raw listener every session gets a guest name ("welcome guest-N\n"),
 * "/nick NAME\n" renames it, and every other line goes to everyone else as
 * "NAME: text\n". Arrivals, renames and departures are announced. Names
 * and the guest counter survive a hot reload (Save / OnResumed).
 *
 * Run it with "threading": "serial": the set of members is shared by all
 * sessions and is touched only from callbacks, which then run one at a
 * time. A partial line is kept per session up to kMaxLine bytes; a longer
 * line closes the session (PIER_REASON_PROTOCOL_ERROR) after saying why. */
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "pier/plugin.hpp"

namespace {

constexpr size_t kMaxLine = 512; /* bytes of one line, without its '\n' */
constexpr size_t kMaxName = 24;

class Member;
std::set<Member*> g_members; /* everyone connected (serial: no lock) */
uint64_t g_guests;           /* guest names handed out so far */

bool valid_name(const std::string& name) {
  if (name.empty() || name.size() > kMaxName)
    return false;
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '-' || c == '_'))
      return false;
  return true;
}

class Member : public pier::Session {
 public:
  ~Member() override { g_members.erase(this); }

  void OnConnected(const char*) override {
    name_ = "guest-" + std::to_string(++g_guests);
    g_members.insert(this);
    Send("welcome " + name_ + "\n");
    ToOthers(name_ + " joined\n");
  }

  /* The name and the partial line come back from the previous version's
   * Save: "NAME\nPARTIAL". */
  void OnResumed(const std::string& saved) override {
    size_t nl = saved.find('\n');
    std::string name = saved.substr(0, nl);
    name_ = valid_name(name) ? name : "guest-" + std::to_string(++g_guests);
    if (nl != std::string::npos && saved.size() - nl - 1 <= kMaxLine)
      line_ = saved.substr(nl + 1);
    g_members.insert(this);
  }

  std::string Save() override { return name_ + "\n" + line_; }

  void OnRecv(const void* data, size_t len) override {
    const char* p = static_cast<const char*>(data);
    if (closing_)
      return; /* what comes after the over-long line is not read */
    for (size_t i = 0; i < len; i++) {
      if (p[i] != '\n') {
        /* kMaxLine bytes, and a '\r' before the newline beyond them. */
        if (line_.size() >= kMaxLine && !(line_.size() == kMaxLine && p[i] == '\r')) {
          Send("error: line longer than " + std::to_string(kMaxLine) + " bytes\n");
          Close(PIER_REASON_PROTOCOL_ERROR);
          closing_ = true;
          line_.clear();
          return;
        }
        line_ += p[i];
        continue;
      }
      if (!line_.empty() && line_.back() == '\r')
        line_.pop_back();
      Line(line_);
      line_.clear();
    }
  }

  void OnDisconnected(pier_reason) override {
    g_members.erase(this);
    ToOthers(name_ + " left\n");
  }

 private:
  void Line(const std::string& line) {
    if (line.rfind("/nick ", 0) == 0) {
      std::string name = line.substr(6);
      if (!valid_name(name)) {
        Send("error: a name is 1 to 24 letters, digits, '-' or '_'\n");
        return;
      }
      if (name.rfind("guest-", 0) == 0) {
        Send("error: names starting with guest- are given to guests\n");
        return;
      }
      for (Member* m : g_members)
        if (m != this && m->name_ == name) {
          Send("error: " + name + " is taken\n");
          return;
        }
      ToOthers(name_ + " is now " + name + "\n");
      name_ = name;
      Send("you are " + name_ + "\n");
    } else if (!line.empty()) {
      ToOthers(name_ + ": " + line + "\n");
    }
  }

  /* One shared copy to every member but this one. */
  void ToOthers(const std::string& text) const {
    std::vector<pier_sid> ids;
    ids.reserve(g_members.size());
    for (Member* m : g_members)
      if (m != this)
        ids.push_back(m->Id());
    if (!ids.empty())
      Host()->broadcast(Host(), ids.data(), ids.size(), text.data(), text.size());
  }

  std::string name_;
  std::string line_; /* the partial line, at most kMaxLine bytes */
  bool closing_ = false;
};

/* The guest counter goes across a reload, so guest names stay unique (and
 * /nick refuses a name in use or one of the guest- form). */
class Lobby : public pier::Plugin {
 public:
  static void OnLoad(const pier::LoadArgs& args) {
    if (!args.state.empty())
      g_guests = std::stoull(args.state);
  }
  static std::string Save() { return std::to_string(g_guests); }
};

}  // namespace

PIER_CPP_PLUGIN("lobby", "1.0.0", Member, Lobby);
