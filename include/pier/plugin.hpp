/* pier C++ layer: header-only, C++17, over the C ABI of pier/plugin.h.
 *
 * Content derives a class from pier::Session and overrides the callbacks it
 * needs; one PIER_CPP_PLUGIN line makes the plugin. The layer creates one
 * object per session, routes the session's callbacks to it, and destroys it
 * after OnDisconnected. Nothing of C++ crosses the ABI: pierd sees an
 * ordinary C descriptor whose callbacks are the layer's trampolines.
 *
 *   #include "pier/plugin.hpp"
 *   struct Echo : pier::Session {
 *     void OnRecv(const void* data, size_t len) override { Send(data, len); }
 *   };
 *   PIER_CPP_PLUGIN("echo", "1.0.0", Echo);
 *
 * Plugin-wide hooks come from an optional second class derived from
 * pier::Plugin (static members: OnLoad, OnUnload, OnTick, Save):
 *   PIER_CPP_PLUGIN("lobby", "1.0.0", LobbySession, Lobby);
 *
 * Lifetime of a session object. It is constructed when the session connects
 * (then OnConnected), or, after a hot reload, by the new version (then
 * OnResumed). Every object the layer constructed gets OnDisconnected exactly
 * once and is then destroyed, with one exception: at a reload the old
 * version destroys the objects of the sessions that stay connected without
 * OnDisconnected (their vtables are in the code being unloaded) and the new
 * version makes new ones. A session that ended while its plugin was
 * quarantined (pier delivers nothing then) gets OnDisconnected with
 * PIER_REASON_NONE at the next reload or unload. The constructor runs
 * before the object knows its session: send from OnConnected, not from it.
 * Destructors must not throw.
 *
 * Exceptions never reach pierd: every trampoline catches everything. One
 * thrown by a session's constructor, OnConnected, OnResumed, OnRecv or
 * OnSend is a plugin failure: the layer reports it with h->fail
 * ("OnRecv threw: <what()>", which pierd logs and counts toward
 * limits.quarantine_after) and closes the session with
 * PIER_REASON_PLUGIN_ERROR (its object's state is suspect); the object gets
 * no more OnRecv or OnSend, only its OnDisconnected. One thrown by
 * OnDisconnected, OnTick, OnUnload or Save is reported the same way (nothing
 * to close). One thrown by OnLoad refuses the load: the layer logs
 * "OnLoad threw: <what()>" and on_load returns -ENOMEM for std::bad_alloc,
 * else -EINVAL, so pierd refuses to start (or a reload rolls back). pierd
 * resets a plugin's failure count when a reload succeeds, so the failures
 * met while a reload's new version resumes its sessions (OnResumed, a
 * constructor) are reported once that reload is done, as one failure
 * ("OnResumed threw: <what()>", "... (and N more ...)" for several).
 *
 * Threads. Callbacks of one session never run concurrently, so a Session
 * needs no lock for its own members. With "threading": "session" objects of
 * different sessions run on different workers at the same time: state they
 * share (statics, the Plugin class) needs a lock or "threading": "serial".
 * The layer finds a session's object through the host's per-session pointer
 * (set_user/get_user: no lock on OnRecv and OnSend); it keeps an index of
 * its objects under a lock taken only when a session connects or ends, and
 * at load and unload, so that it can destroy them all at a reload. The
 * per-session pointer belongs to the layer: do not call set_user yourself.
 *
 * Hot reload. The old version calls Plugin::OnUnload, then Plugin::Save and
 * every live object's Save; the strings go to the new version, whose
 * Plugin::OnLoad sees the plugin's one as args.state (empty on a first load)
 * and whose new objects get their own in OnResumed(saved). What crosses is
 * bytes, so it works across any change of the classes. Every open session
 * of the plugin is resumed, also one the hand-over does not name (after a
 * version that was not on this layer, e.g. a C one, or a hand-over that
 * could not be made): its object gets OnResumed("") and its user pointer,
 * whatever the old version left there, is replaced. A failed reload's
 * rollback is the same round trip in the old code: its objects are rebuilt
 * from what they saved, so keep in Save() whatever a session must not lose.
 * The hand-over holds one string per session (at most 1 MiB: a longer one
 * is a failure of that Save, and that object resumes with "") and one for
 * the plugin (at most 64 MiB), 256 MiB in all (past that, the remaining
 * sessions resume with ""): keep them small.
 *
 * Symbols: everything here is in a namespace with hidden visibility, so the
 * layer's own statics are private to each plugin (two C++ plugins in one
 * pierd never share them). Build with -fvisibility=hidden
 * -fvisibility-inlines-hidden, and on Linux with -fno-gnu-unique: the
 * statics of libstdc++'s own header templates (std::to_string's digit table,
 * for one) are otherwise GNU "unique" symbols, which keep the image mapped
 * after a reload. A .dll exports only what is marked. */
#ifndef PIER_PLUGIN_HPP
#define PIER_PLUGIN_HPP

#ifdef _WIN32
/* As <windows.h> declares it (without pulling all of it in). */
extern "C" __declspec(dllimport) int __stdcall SwitchToThread(void);
#else
#include <sched.h>
#endif

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex> /* std::lock_guard */
#include <new>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "pier/plugin.h"

#if defined(__GNUC__) && !defined(_WIN32)
#define PIER_CPP_HIDDEN __attribute__((visibility("hidden")))
#else
#define PIER_CPP_HIDDEN
#endif

namespace pier PIER_CPP_HIDDEN {

class Plugin;
namespace detail {
template <class S, class P = Plugin>
struct Glue;
/* The host table, from on_load until on_unload returns (any thread). */
inline std::atomic<const pier_host*> g_host{nullptr};
}  // namespace detail

/* What Plugin::OnLoad gets. */
struct LoadArgs {
  const char* config_json; /* the plugin's "config" from server.json, as JSON text ("{}") */
  unsigned generation;     /* 1 for the first load, higher after a reload */
  std::string state;       /* what the previous version's Plugin::Save returned, else "" */
};

/* One connected session. Derive from it and override what you need; the
 * helpers return the host's codes (0, or a negative errno: -ENOTCONN once
 * the session is gone). */
class Session {
 public:
  Session() = default;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  virtual ~Session() = default;

  /* peer: "1.2.3.4:5678" or "[::1]:5678". */
  virtual void OnConnected(const char* /*peer*/) {}
  /* Instead of OnConnected, in the version that took over at a reload;
   * saved is what the old version's object returned from Save. */
  virtual void OnResumed(const std::string& /*saved*/) {}
  /* A whole packet (u16_size_id, header included) or bytes as they came. */
  virtual void OnRecv(const void* /*data*/, size_t /*len*/) {}
  /* bytes of what this session was sent went out (see pier_plugin.on_send). */
  virtual void OnSend(size_t /*bytes*/) {}
  virtual void OnDisconnected(pier_reason /*reason*/) {}
  /* At a reload, in the old version: what the new one's OnResumed gets. */
  virtual std::string Save() { return {}; }

  int Send(const void* data, size_t len) const { return host_->send(host_, id_, data, len); }
  int Send(const std::string& text) const { return Send(text.data(), text.size()); }
  int SendPacket(uint16_t id, const void* body, size_t len) const {
    return host_->send_packet(host_, id_, id, body, len);
  }
  /* Graceful: what is queued goes out first, then OnDisconnected(reason). */
  int Close(pier_reason reason = PIER_REASON_CLOSED) const {
    return host_->close(host_, id_, reason);
  }
  /* The peer's address, "" once the session is gone. */
  std::string Peer() const {
    char buf[64];
    return host_->peer(host_, id_, buf, sizeof(buf)) == 0 ? std::string(buf) : std::string();
  }
  pier_sid Id() const { return id_; }
  const pier_host* Host() const { return host_; }

 private:
  template <class S, class P>
  friend struct detail::Glue;
  const pier_host* host_ = nullptr;
  pier_sid id_ = 0;
  bool failed_ = false; /* threw: gets only OnDisconnected from now on */
};

/* Plugin-wide hooks, all static; derive and declare the ones you need (the
 * layer calls YourPlugin::OnLoad, which is this one unless you hide it). */
class Plugin {
 public:
  static void OnLoad(const LoadArgs& /*args*/) {}
  static void OnUnload() {}
  /* Every tick_ms of server.json (no tick_ms: never). */
  static void OnTick(uint64_t /*now_ms*/) {}
  /* At a reload, in the old version: the new version's args.state. */
  static std::string Save() { return {}; }
  /* With "cluster" (ABI 1.3): a bus message on one of the plugin's
   * subscriptions (reply_to: NULL, or what Respond takes), and a node that
   * came (up) or went. */
  static void OnMessage(const char* /*subject*/, const void* /*data*/, size_t /*len*/,
                        const char* /*reply_to*/) {}
  static void OnNode(const char* /*node*/, bool /*up*/) {}

  /* The cluster bus (see plugin.h): -ENOTSUP without "cluster" or on a
   * host older than ABI 1.3. */
  static const char* Node() {
    const pier_host* h = Host();
    return h && has_bus(h) ? h->node(h) : nullptr;
  }
  static int Publish(const char* subject, const void* data, size_t len) {
    const pier_host* h = Host();
    return h && has_bus(h) ? h->publish(h, subject, data, len) : -ENOTSUP;
  }
  static int Publish(const char* subject, const std::string& data) {
    return Publish(subject, data.data(), data.size());
  }
  static int Subscribe(const char* subject) {
    const pier_host* h = Host();
    return h && has_bus(h) ? h->subscribe(h, subject) : -ENOTSUP;
  }
  static int Unsubscribe(const char* subject) {
    const pier_host* h = Host();
    return h && has_bus(h) ? h->unsubscribe(h, subject) : -ENOTSUP;
  }
  static int Respond(const char* reply_to, const void* data, size_t len) {
    const pier_host* h = Host();
    return h && has_bus(h) ? h->respond(h, reply_to, data, len) : -ENOTSUP;
  }
  static int Respond(const char* reply_to, const std::string& data) {
    return Respond(reply_to, data.data(), data.size());
  }

 private:
  static bool has_bus(const pier_host* h) {
    return h->size >= offsetof(pier_host, respond) + sizeof(h->respond) && h->respond;
  }

 public:

  /* The host table (NULL outside on_load..on_unload). */
  static const pier_host* Host() { return detail::g_host.load(std::memory_order_acquire); }
  static void Log(pier_log_level level, const char* fmt, ...) PIER_PRINTF(2, 3) {
    const pier_host* h = Host();
    char buf[1024];
    va_list ap;
    if (!h)
      return;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    h->log(h, level, "%s", buf);
  }
};

namespace detail {

inline bool has_fail(const pier_host* h) {
  return h->size >= offsetof(pier_host, fail) + sizeof(h->fail) && h->fail;
}

/* Failures met while on_load resumes the sessions of a reload: pierd
 * resets a plugin's failure count (and lifts a quarantine) once a reload
 * succeeds, so a fail() from inside on_load would be forgotten. They are
 * counted here and reported once, by a job posted for after on_load. Only
 * on_load's thread writes it while `on` is set (no other callback of the
 * plugin runs then); the job reads it after on_load returned. */
struct Deferred {
  std::atomic<bool> on{false};
  unsigned count = 0;
  char first[512] = "";
};
inline Deferred g_deferred;

inline void report_line(const pier_host* h, const char* why) {
  if (has_fail(h))
    h->fail(h, why);
  else
    h->log(h, PIER_LOG_ERROR, "%s", why);
}

/* Reports "<where> threw: <what>" as a failure (h->fail, or an error line
 * from a host before ABI 1.1). */
inline void report(const pier_host* h, const char* where, const char* what) {
  char why[512];
  std::snprintf(why, sizeof(why), "%s threw: %s", where, what);
  if (g_deferred.on.load(std::memory_order_relaxed)) {
    if (g_deferred.count++ == 0)
      std::snprintf(g_deferred.first, sizeof(g_deferred.first), "%s", why);
    return;
  }
  report_line(h, why);
}

/* The posted job: the failures of the last on_load, as one. */
inline void report_deferred(void* arg) {
  const pier_host* h = static_cast<const pier_host*>(arg);
  char why[600];
  if (g_deferred.count == 1)
    std::snprintf(why, sizeof(why), "%s", g_deferred.first);
  else
    std::snprintf(why, sizeof(why), "%s (and %u more while resuming sessions)",
                  g_deferred.first, g_deferred.count - 1);
  g_deferred.count = 0;
  report_line(h, why);
}

/* Runs fn, reporting whatever it throws as a failure of where. Returns
 * false if it threw. */
template <class F>
bool guarded(const pier_host* h, const char* where, F&& fn) noexcept {
  try {
    fn();
    return true;
  } catch (const std::exception& e) {
    report(h, where, e.what());
  } catch (...) {
    report(h, where, "an exception not derived from std::exception");
  }
  return false;
}

/* The hand-over between versions (pier_state): "PIERCPP1", u32 length and
 * bytes of Plugin::Save, u32 count, then per session u64 sid, u32 length,
 * bytes. Native byte order: both versions run in the same process. */
constexpr char kStateMagic[8] = {'P', 'I', 'E', 'R', 'C', 'P', 'P', '1'};
/* What one Save() may hand over (a longer one is a failure of that Save and
 * the object resumes with ""), and the whole hand-over (past it, the rest of
 * the sessions resume with ""). */
constexpr size_t kSaveMax = 1u << 20;
constexpr size_t kStateMax = 256u << 20;

struct Handed {
  std::string plugin;
  std::vector<std::pair<pier_sid, std::string>> sessions;
};

inline bool take(const unsigned char*& p, const unsigned char* end, void* out, size_t n) {
  if ((size_t)(end - p) < n)
    return false;
  std::memcpy(out, p, n);
  p += n;
  return true;
}

/* Parses a hand-over into out; false, with out cleared, if it is not the
 * layer's or is damaged. */
inline bool parse_state_(const void* data, size_t len, Handed& out);
inline bool parse_state(const void* data, size_t len, Handed& out) {
  if (parse_state_(data, len, out))
    return true;
  out.plugin.clear();
  out.sessions.clear();
  return false;
}
inline bool parse_state_(const void* data, size_t len, Handed& out) {
  const unsigned char *p = static_cast<const unsigned char*>(data), *end = p + len;
  char magic[8];
  uint32_t n, count;
  if (!data || !take(p, end, magic, 8) || std::memcmp(magic, kStateMagic, 8) != 0 ||
      !take(p, end, &n, 4) || (size_t)(end - p) < n)
    return false;
  out.plugin.assign(reinterpret_cast<const char*>(p), n);
  p += n;
  if (!take(p, end, &count, 4))
    return false;
  for (uint32_t i = 0; i < count; i++) {
    pier_sid sid;
    if (!take(p, end, &sid, 8) || !take(p, end, &n, 4) || (size_t)(end - p) < n)
      return false;
    out.sessions.emplace_back(sid, std::string(reinterpret_cast<const char*>(p), n));
    p += n;
  }
  return true;
}

inline void put(std::string& out, const void* p, size_t n) {
  out.append(static_cast<const char*>(p), n);
}

/* A lock for the layer's index, held for one map operation at a time.
 * Not std::mutex: mingw-w64's g++ with win32 threads (the Windows build's)
 * has none, and the index is touched only when a session connects or ends. */
class SpinLock {
 public:
  void lock() noexcept {
    for (unsigned spins = 0; flag_.test_and_set(std::memory_order_acquire); spins++)
      if (spins >= 64)
        yield(); /* the holder may have been preempted: let it run */
  }
  void unlock() noexcept { flag_.clear(std::memory_order_release); }
  static void yield() noexcept {
#ifdef _WIN32
    ::SwitchToThread();
#else
    ::sched_yield();
#endif
  }

 private:
  std::atomic_flag flag_ = ATOMIC_FLAG_INIT;
};

template <class S, class P>
struct Glue {
  static_assert(std::is_base_of_v<Session, S>, "the session class derives from pier::Session");
  static_assert(std::is_default_constructible_v<S>, "the session class has a default constructor");
  /* Every object the layer made, by session: touched at connect, end, load
   * and unload only (OnRecv and OnSend find theirs through get_user). */
  static inline SpinLock mu;
  static inline std::unordered_map<pier_sid, Session*> objects;

  static const pier_host* host() { return g_host.load(std::memory_order_acquire); }

  /* Makes and registers the object of sid; NULL (reported, session closed)
   * if that threw. */
  static Session* make(const pier_host* h, pier_sid sid) {
    Session* s = nullptr;
    if (!guarded(h, "constructor", [&] {
          s = new S();
          s->host_ = h;
          s->id_ = sid;
          std::lock_guard<SpinLock> lock(mu);
          objects.emplace(sid, s);
        })) {
      delete s;
      h->set_user(h, sid, nullptr); /* nothing of an earlier version's stays */
      h->close(h, sid, PIER_REASON_PLUGIN_ERROR);
      return nullptr;
    }
    h->set_user(h, sid, s);
    return s;
  }

  template <class F>
  static void call(const pier_host* h, Session* s, const char* where, F&& fn) {
    if (!guarded(h, where, fn)) {
      s->failed_ = true;
      h->close(h, s->id_, PIER_REASON_PLUGIN_ERROR);
    }
  }

  static int on_load(const pier_load_args* a) {
    const pier_host* h = a ? a->host : nullptr;
    Handed handed;
    if (!h || h->abi_major != PIER_ABI_MAJOR ||
        h->size < offsetof(pier_host, reason_text) + sizeof(h->reason_text))
      return -ENOTSUP;
    try {
      if (!parse_state(a->state, a->state_len, handed) && a->state && a->state_len > 0)
        h->log(h, PIER_LOG_WARN,
               "the previous version's state (%zu bytes) is not this layer's: the plugin and "
               "its sessions resume without it",
               a->state_len);
      LoadArgs args{a->config_json ? a->config_json : "{}", a->generation, handed.plugin};
      g_host.store(h, std::memory_order_release);
      P::OnLoad(args);
    } catch (const std::bad_alloc& e) {
      h->log(h, PIER_LOG_ERROR, "OnLoad threw: %s", e.what());
      g_host.store(nullptr, std::memory_order_release);
      return -ENOMEM;
    } catch (const std::exception& e) {
      h->log(h, PIER_LOG_ERROR, "OnLoad threw: %s", e.what());
      g_host.store(nullptr, std::memory_order_release);
      return -EINVAL;
    } catch (...) {
      h->log(h, PIER_LOG_ERROR, "OnLoad threw: an exception not derived from std::exception");
      g_host.store(nullptr, std::memory_order_release);
      return -EINVAL;
    }
    resume(h, handed);
    return 0;
  }

  /* After a reload (or a failed one's rollback), an object for every open
   * session of the plugin: with what its old object saved, or "" for one
   * the hand-over does not name (a version that was not on this layer, or
   * a hand-over cut short). Its user pointer, whatever it held, becomes the
   * new object. Failures are reported after on_load (g_deferred). */
  static void resume(const pier_host* h, Handed& handed) noexcept {
    std::vector<pier_sid> open;
    std::unordered_map<pier_sid, std::string*> saved;
    g_deferred.on.store(true, std::memory_order_relaxed);
    guarded(h, "on_load", [&] {
      size_t n = h->sessions(h, nullptr, 0);
      while (n > 0) {
        open.resize(n);
        size_t total = h->sessions(h, open.data(), open.size());
        if (total <= open.size()) {
          open.resize(total);
          break;
        }
        n = total;
      }
      for (auto& hs : handed.sessions)
        saved.emplace(hs.first, &hs.second);
    });
    static const std::string none;
    for (pier_sid sid : open) {
      auto it = saved.find(sid);
      const std::string& state = it != saved.end() ? *it->second : none;
      if (Session* s = make(h, sid))
        call(h, s, "OnResumed", [&] { s->OnResumed(state); });
    }
    g_deferred.on.store(false, std::memory_order_relaxed);
    if (g_deferred.count > 0 && h->post(h, report_deferred, const_cast<pier_host*>(h)) != 0)
      report_deferred(const_cast<pier_host*>(h));
  }

  static void on_unload(pier_state* out) {
    const pier_host* h = host();
    std::string plugin, blob;
    std::vector<std::pair<pier_sid, std::string>> live;
    size_t total = 0;
    bool cut = false;
    if (!h)
      return;
    guarded(h, "OnUnload", [] { P::OnUnload(); });
    guarded(h, "Save", [&] { plugin = P::Save(); });
    if (plugin.size() > kSaveMax * 64) {
      report_line(h, "Plugin::Save returned more than 64 MiB: the next version starts without it");
      plugin.clear();
    }
    total = plugin.size();
    std::unordered_map<pier_sid, Session*> all;
    {
      std::lock_guard<SpinLock> lock(mu);
      all.swap(objects);
    }
    for (const auto& entry : all) {
      pier_sid sid = entry.first;
      Session* s = entry.second;
      char peer[64];
      if (h->peer(h, sid, peer, sizeof(peer)) == -ENOTCONN) {
        /* Ended while nothing was delivered (quarantine): its last call. */
        guarded(h, "OnDisconnected", [&] { s->OnDisconnected(PIER_REASON_NONE); });
      } else {
        std::string saved;
        if (!s->failed_)
          guarded(h, "Save", [&] { saved = s->Save(); });
        if (saved.size() > kSaveMax) {
          char why[160];
          std::snprintf(why, sizeof(why),
                        "Save returned %zu bytes, over the %zu one session may hand over",
                        saved.size(), kSaveMax);
          report_line(h, why);
          saved.clear();
        }
        if (total + saved.size() > kStateMax) {
          if (!cut)
            h->log(h, PIER_LOG_ERROR,
                   "on_unload: the hand-over is over %zu bytes; the remaining sessions resume "
                   "without their saved state",
                   kStateMax);
          cut = true;
          saved.clear();
        }
        total += saved.size();
        /* If even that fails, the session resumes with "". */
        guarded(h, "on_unload", [&] { live.emplace_back(sid, std::move(saved)); });
        h->set_user(h, sid, nullptr);
      }
      delete s;
    }
    /* All or nothing: a hand-over cut short by an exception is dropped (the
     * new version then resumes every session with ""). */
    if (!guarded(h, "on_unload", [&] {
      uint32_t n = (uint32_t)plugin.size(), count = (uint32_t)live.size();
      blob.append(kStateMagic, sizeof(kStateMagic));
      put(blob, &n, 4);
      blob += plugin;
      put(blob, &count, 4);
      for (const auto& l : live) {
        n = (uint32_t)l.second.size();
        put(blob, &l.first, 8);
        put(blob, &n, 4);
        blob += l.second;
      }
    }))
      blob.clear();
    if (out && !blob.empty() && (out->data = std::malloc(blob.size()))) {
      std::memcpy(out->data, blob.data(), blob.size());
      out->len = blob.size();
    } else if (out && !live.empty()) {
      h->log(h, PIER_LOG_ERROR,
             "on_unload: no memory to hand %zu sessions over; they resume without their state",
             live.size());
    }
    g_host.store(nullptr, std::memory_order_release);
  }

  static void on_connected(pier_sid sid, const char* peer) {
    const pier_host* h = host();
    if (Session* s = make(h, sid))
      call(h, s, "OnConnected", [&] { s->OnConnected(peer); });
  }

  static void on_recv(pier_sid sid, const void* data, size_t len) {
    const pier_host* h = host();
    Session* s = static_cast<Session*>(h->get_user(h, sid));
    if (s && !s->failed_)
      call(h, s, "OnRecv", [&] { s->OnRecv(data, len); });
  }

  static void on_send(pier_sid sid, size_t bytes) {
    const pier_host* h = host();
    Session* s = static_cast<Session*>(h->get_user(h, sid));
    if (s && !s->failed_)
      call(h, s, "OnSend", [&] { s->OnSend(bytes); });
  }

  static void on_disconnected(pier_sid sid, pier_reason reason) {
    const pier_host* h = host();
    Session* s = nullptr;
    {
      std::lock_guard<SpinLock> lock(mu);
      auto it = objects.find(sid);
      if (it == objects.end())
        return;
      s = it->second;
      objects.erase(it);
    }
    guarded(h, "OnDisconnected", [&] { s->OnDisconnected(reason); });
    delete s;
  }

  static void on_tick(uint64_t now_ms) {
    guarded(host(), "OnTick", [&] { P::OnTick(now_ms); });
  }

  static void on_message(const char* subject, const void* data, size_t len,
                         const char* reply_to) {
    guarded(host(), "OnMessage", [&] { P::OnMessage(subject, data, len, reply_to); });
  }

  static void on_node(const char* node, int up) {
    guarded(host(), "OnNode", [&] { P::OnNode(node, up != 0); });
  }
};

}  // namespace detail
}  // namespace pier

/* Defines the plugin's descriptor for a Session class and, optionally, a
 * Plugin class: PIER_CPP_PLUGIN("name", "1.0.0", MySession[, MyPlugin]); */
#define PIER_CPP_PLUGIN(plugin_name, plugin_version, ...)                             \
  PIER_PLUGIN(plugin_name, plugin_version,                                            \
              .on_load = ::pier::detail::Glue<__VA_ARGS__>::on_load,                  \
              .on_unload = ::pier::detail::Glue<__VA_ARGS__>::on_unload,              \
              .on_connected = ::pier::detail::Glue<__VA_ARGS__>::on_connected,        \
              .on_recv = ::pier::detail::Glue<__VA_ARGS__>::on_recv,                  \
              .on_send = ::pier::detail::Glue<__VA_ARGS__>::on_send,                  \
              .on_disconnected = ::pier::detail::Glue<__VA_ARGS__>::on_disconnected,  \
              .on_tick = ::pier::detail::Glue<__VA_ARGS__>::on_tick,                  \
              .on_message = ::pier::detail::Glue<__VA_ARGS__>::on_message,            \
              .on_node = ::pier::detail::Glue<__VA_ARGS__>::on_node)

#endif
