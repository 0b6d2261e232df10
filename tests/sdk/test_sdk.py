"""The installed SDK as a plugin author meets it: `cmake --install` of this
build into a temporary prefix, plugins built out of tree with only that
prefix (find_package(pier) through CMAKE_PREFIX_PATH, pkg-config through
PKG_CONFIG_PATH), pier-new-plugin's scaffold, and the installed pierd on the
installed server.json (ports changed only) serving echo and those plugins
over TCP.

Environment (tests/CMakeLists.txt): PIER_TEST_BIN (the build directory),
PIER_TEST_SOURCE (the source tree), PIER_TEST_BACKEND (io_uring or epoll).
"""
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.abspath(os.environ.get("PIER_TEST_BIN") or os.path.join(HERE, "..", "..", "build"))
SRC = os.path.abspath(os.environ.get("PIER_TEST_SOURCE") or os.path.join(HERE, "..", ".."))
BACKEND = os.environ.get("PIER_TEST_BACKEND") or "epoll"

FIVE_LINES = ("cmake_minimum_required(VERSION 3.25)\n"
              "project(hello C)\n"
              "find_package(pier REQUIRED)\n"
              "pier_add_plugin(hello hello.c)\n")

HELLO_C = r"""
#include <pier/plugin.h>
static const pier_host *host;
static int hello_load(const pier_load_args *a) { host = a->host; return 0; }
static void hello_recv(pier_sid sid, const void *data, size_t len) {
  static const char tag[] = "hello:";
  host->send(host, sid, tag, sizeof tag - 1);
  host->send(host, sid, data, len);
}
PIER_PLUGIN("hello", "1.0.0", .on_load = hello_load, .on_recv = hello_recv);
"""


def run(cmd, **kw):
    kw.setdefault("timeout", 300)
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def check(tc, cmd, **kw):
    r = run(cmd, **kw)
    tc.assertEqual(r.returncode, 0, "%s:\n%s" % (" ".join(cmd), r.stdout))
    return r.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exported(so):
    out = subprocess.run(["nm", "-D", "--defined-only", so], stdout=subprocess.PIPE, text=True,
                         check=True).stdout
    return sorted(line.split()[-1] for line in out.splitlines() if line.strip())


def talk(port, data, expect, timeout=10):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while len(got) < len(expect):
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        return got


class InstalledSdk(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="pier-sdk-")
        cls.prefix = os.path.join(cls.tmp, "prefix")
        r = run(["cmake", "--install", BIN, "--prefix", cls.prefix])
        if r.returncode != 0:
            raise RuntimeError("cmake --install failed:\n" + r.stdout)
        cls.installed = [os.path.relpath(os.path.join(r, f), cls.prefix)
                         for r, _, fs in os.walk(cls.prefix) for f in fs]
        cls.conf_path = os.path.join(cls.prefix, "etc", "pier", "server.json")
        with open(cls.conf_path) as f:
            cls.conf = json.load(f)
        cls.plugin_dir = os.path.normpath(os.path.join(cls.prefix, "etc", "pier",
                                                       cls.conf["plugin_dir"]))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def p(self, *parts):
        return os.path.join(self.prefix, *parts)

    def test_installed_files(self):
        for f in ["bin/pierd", "bin/pierctl", "bin/pier-bench", "bin/pier-new-plugin"]:
            self.assertTrue(os.access(self.p(f), os.X_OK), f)
        for f in ["include/pier/plugin.h", "include/pier/types.h",
                  "share/pkgconfig/pier-plugin.pc", "share/cmake/pier/pierConfig.cmake",
                  "share/cmake/pier/pierConfigVersion.cmake", "share/cmake/pier/pierTargets.cmake",
                  "share/cmake/pier/PierPlugin.cmake", "etc/pier/server.json",
                  "lib/systemd/system/pierd.service",
                  "share/pier/plugins/chat/web/index.html", "share/doc/pier/README.md"]:
            self.assertTrue(os.path.isfile(self.p(f)), f)
        self.assertTrue(os.path.isfile(os.path.join(self.plugin_dir, "echo.so")))
        self.assertTrue(os.path.isfile(os.path.join(self.plugin_dir, "chat.so")))
        # Every header of include/pier is installed, and nothing of the tests.
        self.assertEqual(sorted(os.listdir(self.p("include", "pier"))),
                         sorted(os.listdir(os.path.join(SRC, "include", "pier"))))
        for f in self.installed:
            self.assertNotIn("test", f)
        with open(self.p("lib/systemd/system/pierd.service")) as f:
            unit = f.read()
        self.assertIn("ExecStart=%s --config %s\n" % (self.p("bin/pierd"), self.conf_path), unit)
        self.assertNotIn("@", unit)

    def test_config_paths_resolve_from_etc(self):
        base = self.p("etc", "pier")
        self.assertFalse(os.path.isabs(self.conf["plugin_dir"]))
        for pl in self.conf["plugins"]:
            self.assertTrue(os.path.isfile(os.path.join(base, pl["path"]) + ".so"), pl)
        static = [l["static"] for l in self.conf["listeners"] if "static" in l]
        self.assertEqual(len(static), 1)
        self.assertTrue(os.path.isfile(os.path.join(base, static[0], "index.html")))
        self.assertEqual(os.path.normpath(os.path.join(base, self.conf["admin_socket"])),
                         self.p("var", "run", "pier", "pierd.sock"))

    def test_pkg_config(self):
        env = dict(os.environ, PKG_CONFIG_PATH=self.p("share", "pkgconfig"))
        out = check(self, ["pkg-config", "--cflags", "pier-plugin"], env=env)
        self.assertEqual(out.strip(), "-I" + self.p("include"))
        self.assertEqual(check(self, ["pkg-config", "--libs", "pier-plugin"], env=env).strip(), "")
        self.assertEqual(check(self, ["pkg-config", "--modversion", "pier-plugin"],
                               env=env).strip(), "0.1.0")

    # ---- server.json on re-install and its template -------------------

    def install(self, prefix):
        return check(self, ["cmake", "--install", BIN, "--prefix", prefix])

    def test_reinstall_keeps_edited_config(self):
        prefix = tempfile.mkdtemp(dir=self.tmp, prefix="reinstall-")
        conf = os.path.join(prefix, "etc", "pier", "server.json")
        out = self.install(prefix)
        self.assertIn("-- Installing: %s\n" % conf, out)
        with open(conf) as f:
            pristine = f.read()
        # The same again: the file stays as it is, and no .new.
        out = self.install(prefix)
        self.assertIn("-- Up-to-date: %s\n" % conf, out)
        self.assertNotIn("Keeping", out)
        self.assertFalse(os.path.exists(conf + ".new"))
        edited = pristine.replace('"log_level": "info"', '"log_level": "debug"')
        self.assertNotEqual(edited, pristine)
        with open(conf, "w") as f:
            f.write(edited)
        for _ in range(2):
            out = self.install(prefix)
            self.assertIn("-- Keeping edited %s; the new default is %s.new\n" % (conf, conf), out)
            with open(conf) as f:
                self.assertEqual(f.read(), edited)
            with open(conf + ".new") as f:
                self.assertEqual(f.read(), pristine)

    def test_config_template_is_the_source(self):
        # The installed server.json comes from the source's config/server.json,
        # not from the build tree's runnable copy, which users edit.
        build_conf = os.path.join(BIN, "config", "server.json")
        prefix = tempfile.mkdtemp(dir=self.tmp, prefix="template-")
        with open(os.path.join(BIN, ".sdk-test-config.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with open(build_conf) as f:
                saved = f.read()
            try:
                with open(build_conf, "w") as f:
                    f.write(saved.replace('"plugin_dir": "../plugins"', '"plugin_dir": "../x"')
                            .replace('"max_sessions": 10000', '"max_sessions": 12345'))
                self.install(prefix)
            finally:
                with open(build_conf, "w") as f:
                    f.write(saved)
        with open(os.path.join(prefix, "etc", "pier", "server.json")) as f:
            got = json.load(f)
        with open(os.path.join(SRC, "config", "server.json")) as f:
            want = json.load(f)
        self.assertEqual(got["plugin_dir"], self.conf["plugin_dir"])
        # Apart from the paths the install rewrites, the same.
        for k in ["plugin_dir", "admin_socket"]:
            got[k] = want[k]
        for a, b in zip(got["plugins"] + got["listeners"], want["plugins"] + want["listeners"]):
            for k in ["path", "static"]:
                if k in b and k in a and a[k] != b[k]:
                    a[k] = b[k]
        self.assertEqual(got, want)

    # ---- plugins built out of tree ------------------------------------

    def cmake_plugin(self, src_dir, extra=()):
        env = dict(os.environ)
        env.pop("PKG_CONFIG_PATH", None)
        env.pop("CMAKE_PREFIX_PATH", None)
        build = os.path.join(src_dir, "build")
        check(self, ["cmake", "-S", src_dir, "-B", build, "-DCMAKE_PREFIX_PATH=" + self.prefix,
                     *extra], env=env)
        check(self, ["cmake", "--build", build], env=env)
        return build

    def hello_cmake(self):
        d = tempfile.mkdtemp(dir=self.tmp, prefix="hello-cmake-")
        with open(os.path.join(d, "CMakeLists.txt"), "w") as f:
            f.write(FIVE_LINES)
        with open(os.path.join(d, "hello.c"), "w") as f:
            f.write(HELLO_C)
        return os.path.join(self.cmake_plugin(d), "hello.so")

    def test_cmake_plugin(self):
        so = self.hello_cmake()
        self.assertEqual(os.listdir(os.path.dirname(so)).count("libhello.so"), 0)
        self.assertEqual(exported(so), ["pier_plugin_descriptor"])

    def test_pkg_config_plugin(self):
        d = tempfile.mkdtemp(dir=self.tmp, prefix="hello-pc-")
        with open(os.path.join(d, "hello.c"), "w") as f:
            f.write(HELLO_C)
        env = dict(os.environ, PKG_CONFIG_PATH=self.p("share", "pkgconfig"))
        cflags = check(self, ["pkg-config", "--cflags", "pier-plugin"], env=env).split()
        so = os.path.join(d, "hello.so")
        check(self, ["cc", "-shared", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra", "-Werror",
                     *cflags, os.path.join(d, "hello.c"), "-o", so])
        self.assertEqual(exported(so), ["pier_plugin_descriptor"])

    def hello_cpp(self):
        d = tempfile.mkdtemp(dir=self.tmp, prefix="hello-cpp-")
        with open(os.path.join(d, "CMakeLists.txt"), "w") as f:
            f.write(FIVE_LINES.replace("project(hello C)", "project(hello_cpp CXX)")
                    .replace("hello hello.c", "hello_cpp hello.cpp"))
        shutil.copy(os.path.join(HERE, "cpp_hello.cpp"), os.path.join(d, "hello.cpp"))
        return os.path.join(self.cmake_plugin(d, ["-DCMAKE_CXX_FLAGS=-Wall -Wextra -Werror"]),
                            "hello_cpp.so")

    def test_cpp_plugin(self):
        # The descriptor has C linkage, unmangled. Of the plugin's own code
        # and of the C++ layer nothing else is exported (hidden visibility,
        # inlines too); what remains are the weak instantiations of
        # libstdc++'s templates, which its headers declare visible, and none
        # of them is a GNU unique symbol (which would pin the image across a
        # reload).
        out = subprocess.run(["nm", "-D", "--defined-only", self.hello_cpp()],
                             stdout=subprocess.PIPE, text=True, check=True).stdout
        syms = [line.split()[-2:] for line in out.splitlines() if line.strip()]
        self.assertIn(["D", "pier_plugin_descriptor"], syms)
        for kind, name in syms:
            self.assertNotEqual(kind, "u", name)
            if name != "pier_plugin_descriptor":
                self.assertRegex(name, r"^_Z(Z?N[KVR]*St|St)", name)

    def test_readme_examples_build(self):
        # The C and C++ plugins of README.md's "Writing a plugin", built with
        # its CMakeLists against the installed SDK, warning-free.
        with open(os.path.join(SRC, "README.md")) as f:
            readme = f.read()
        section = readme[readme.index("## Writing a plugin"):readme.index("### The host table")]
        blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
        cmake = [b for lang, b in blocks if lang == "cmake"]
        self.assertEqual(cmake, [FIVE_LINES])
        for lang, ext, proj in [("c", "c", "C"), ("cpp", "cpp", "CXX")]:
            code = [b for l, b in blocks if l == lang and "PIER_" in b]
            self.assertEqual(len(code), 1, lang)
            d = tempfile.mkdtemp(dir=self.tmp, prefix="readme-%s-" % lang)
            with open(os.path.join(d, "CMakeLists.txt"), "w") as f:
                f.write(FIVE_LINES.replace("project(hello C)", "project(hello %s)" % proj)
                        .replace("hello.c", "hello." + ext))
            with open(os.path.join(d, "hello." + ext), "w") as f:
                f.write(code[0])
            flags = "-DCMAKE_%s_FLAGS=-Wall -Wextra -Werror" % ("C" if lang == "c" else "CXX")
            so = os.path.join(self.cmake_plugin(d, [flags]), "hello.so")
            self.assertIn("pier_plugin_descriptor", exported(so))

    # ---- the scaffold -------------------------------------------------

    def test_new_plugin_errors(self):
        tool = self.p("bin", "pier-new-plugin")
        r = run([tool, "bad name"], cwd=self.tmp)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stdout, "pier-new-plugin: invalid plugin name 'bad name': use 1 to 32 "
                         "characters from [A-Za-z0-9_-], not starting with '-'\n")
        r = run([tool, "a" * 33], cwd=self.tmp)
        self.assertEqual(r.returncode, 2)
        d = os.path.join(self.tmp, "occupied")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "keep.txt"), "w") as f:
            f.write("mine\n")
        r = run([tool, "ok", d])
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, "pier-new-plugin: %s is not empty: not overwriting it\n" % d)
        with open(os.path.join(d, "keep.txt")) as f:
            self.assertEqual(f.read(), "mine\n")
        self.assertEqual(os.listdir(d), ["keep.txt"])
        r = run([tool, "--help"])
        self.assertEqual(r.returncode, 0)
        self.assertTrue(r.stdout.startswith("usage: pier-new-plugin NAME [DIR]\n"))

    def test_new_plugin_path_with_sed_specials(self):
        # '&' and '|' in DIR's path reach the README as they are.
        parent = os.path.join(self.tmp, "a&b|c\\d")
        os.makedirs(parent)
        d = os.path.join(parent, "game")
        check(self, [self.p("bin", "pier-new-plugin"), "odd", d])
        self.assertEqual(sorted(os.listdir(parent)), ["game"])
        plain = os.path.join(self.tmp, "plain", "game")
        check(self, [self.p("bin", "pier-new-plugin"), "odd", plain])
        for f in ["odd.c", "CMakeLists.txt", "README.md"]:
            with open(os.path.join(d, f)) as a, open(os.path.join(plain, f)) as b:
                got, want = a.read(), b.read()
            self.assertEqual(got, want.replace(plain, d), f)
        with open(os.path.join(d, "README.md")) as f:
            readme = f.read()
        self.assertIn('{ "name": "odd", "path": "%s/build/odd" }' % d, readme)
        self.assertNotIn("@", readme)

    def test_new_plugin_failed_write_leaves_nothing(self):
        # A write that fails half-way (here: past a 1 KiB file size limit)
        # leaves neither DIR nor the temporary directory, and a retry works.
        tool = self.p("bin", "pier-new-plugin")
        parent = tempfile.mkdtemp(dir=self.tmp, prefix="fail-")
        for d in [os.path.join(parent, "game"), parent]:  # new DIR, empty DIR
            r = run(["bash", "-c", 'ulimit -f 1 && exec "$0" "$@"', tool, "big", d])
            self.assertEqual(r.returncode, 1, r.stdout)
            self.assertIn("pier-new-plugin: cannot write big.c", r.stdout)
            self.assertEqual(os.listdir(parent), [])
        d = os.path.join(parent, "game")
        out = check(self, [tool, "big", d])
        self.assertIn("pier-new-plugin: wrote %s" % d, out)
        self.assertEqual(os.listdir(parent), ["game"])
        self.assertEqual(sorted(os.listdir(d)), ["CMakeLists.txt", "README.md", "big.c"])
        self.assertEqual(oct(os.stat(d).st_mode & 0o777), oct(0o777 & ~self.umask()))

    @staticmethod
    def umask():
        m = os.umask(0)
        os.umask(m)
        return m

    def scaffold(self, name):
        d = os.path.join(self.tmp, "scaffold-" + name)
        out = check(self, [self.p("bin", "pier-new-plugin"), name, d])
        self.assertIn("pier-new-plugin: wrote %s" % d, out)
        self.assertEqual(sorted(os.listdir(d)), sorted(["CMakeLists.txt", "README.md", name + ".c"]))
        with open(os.path.join(d, "CMakeLists.txt")) as f:
            self.assertEqual(f.read(), FIVE_LINES.replace("hello", name))
        build = self.cmake_plugin(d, ["-DCMAKE_C_FLAGS=-Wall -Wextra -Wpedantic -Werror"])
        so = os.path.join(build, name + ".so")
        self.assertEqual(exported(so), ["pier_plugin_descriptor"])
        return so

    # ---- the installed daemon -----------------------------------------

    def test_daemon_serves_installed_and_new_plugins(self):
        hello = self.hello_cmake()
        hello_cpp = self.hello_cpp()
        scaff = self.scaffold("my-game")
        shutil.copy(hello, os.path.join(self.plugin_dir, "hello.so"))
        shutil.copy(hello_cpp, os.path.join(self.plugin_dir, "hello_cpp.so"))
        shutil.copy(scaff, os.path.join(self.plugin_dir, "my-game.so"))
        conf = json.loads(json.dumps(self.conf))
        conf["io_backend"] = BACKEND
        conf["metrics"]["port"] = free_port()
        for l in conf["listeners"]:
            l["port"] = free_port()
        echo_port, hello_port, game_port, cpp_port = (free_port(), free_port(), free_port(),
                                                      free_port())
        conf["listeners"][0]["port"] = echo_port
        # Beside the installed plugins, with their path written the same way.
        rel = conf["plugins"][0]["path"].rsplit("/", 1)[0]
        conf["plugins"] += [{"name": "hello", "path": rel + "/hello"},
                            {"name": "my-game", "path": rel + "/my-game"},
                            {"name": "hello_cpp", "path": rel + "/hello_cpp"}]
        conf["listeners"] += [
            {"address": "127.0.0.1", "port": hello_port, "plugin": "hello", "framing": "raw"},
            {"address": "127.0.0.1", "port": game_port, "plugin": "my-game", "framing": "raw"},
            {"address": "127.0.0.1", "port": cpp_port, "plugin": "hello_cpp", "framing": "raw"}]
        path = self.p("etc", "pier", "server-%s.json" % BACKEND)
        with open(path, "w") as f:
            json.dump(conf, f)
        log = open(os.path.join(self.tmp, "pierd-%s.log" % BACKEND), "w+")
        d = subprocess.Popen([self.p("bin", "pierd"), "--config", path], stdin=subprocess.PIPE,
                             stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 20
            while True:
                log.seek(0)
                text = log.read()
                if "pierd ready" in text:
                    break
                self.assertIsNone(d.poll(), text)
                self.assertLess(time.time(), deadline, text)
                time.sleep(0.05)
            self.assertIn("%s backend" % BACKEND, text)
            self.assertEqual(talk(echo_port, b"ping\n", b"ping\n"), b"ping\n")
            self.assertEqual(talk(hello_port, b"abc", b"hello:abc"), b"hello:abc")
            self.assertEqual(talk(game_port, b"from a client", b"from a client"), b"from a client")
            want = b"hello from c++\n#1 x"
            self.assertEqual(talk(cpp_port, b"x", want), want)
            out = check(self, [self.p("bin", "pierctl"), "--config", path, "plugins"])
            lobby = [l["port"] for l in conf["listeners"] if l["plugin"] == "lobby"]
            self.assertEqual(len(lobby), 1)
            self.assertEqual(talk(lobby[0], b"", b"welcome guest-1\n"), b"welcome guest-1\n")
            for n in ["echo", "chat", "lobby", "hello", "my-game", "hello_cpp"]:
                self.assertIn("plugin %s:" % n, out)
        finally:
            d.stdin.close()
            d.terminate()
            d.wait(timeout=20)
            log.close()
