"""The .deb as apt sees it: a build of this source configured for /usr
(Release, no test suites), `cpack -G DEB`, then dpkg-deb's view of the
package: its control fields, its files (and no test files), its conffile,
and the installed server.json's relative paths resolving inside the
extracted tree.

Environment (tests/CMakeLists.txt): PIER_TEST_SOURCE (the source tree),
PIER_TEST_DEB_BUILD (the build directory to use; made if needed).
"""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.environ.get("PIER_TEST_SOURCE") or os.path.join(HERE, "..", ".."))
BUILD = os.path.abspath(os.environ.get("PIER_TEST_DEB_BUILD") or os.path.join(SRC, "build-deb"))
MULTIARCH = subprocess.run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"], stdout=subprocess.PIPE,
                           text=True).stdout.strip() or "x86_64-linux-gnu"
ARCH = subprocess.run(["dpkg", "--print-architecture"], stdout=subprocess.PIPE,
                      text=True).stdout.strip()


def check(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=1200, **kw)
    if r.returncode != 0:
        raise AssertionError("%s:\n%s" % (" ".join(cmd), r.stdout))
    return r.stdout


class Deb(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        check(["cmake", "-S", SRC, "-B", BUILD, "-DCMAKE_INSTALL_PREFIX=/usr",
               "-DCMAKE_BUILD_TYPE=Release", "-DPIER_TESTS=OFF"])
        check(["cmake", "--build", BUILD, "-j2"])
        for f in os.listdir(BUILD):
            if f.endswith(".deb"):
                os.remove(os.path.join(BUILD, f))
        check(["cpack", "-G", "DEB"], cwd=BUILD)
        cls.deb = os.path.join(BUILD, "pier_0.1.0_%s.deb" % ARCH)
        cls.root = tempfile.mkdtemp(prefix="pier-deb-")
        check(["dpkg-deb", "-x", cls.deb, cls.root])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)

    def field(self, name):
        return check(["dpkg-deb", "-f", self.deb, name]).strip()

    def test_control(self):
        self.assertEqual(self.field("Package"), "pier")
        self.assertEqual(self.field("Version"), "0.1.0")
        self.assertEqual(self.field("Architecture"), ARCH)
        depends = [d.split()[0] for d in self.field("Depends").split(", ")]
        for lib in ["liburing2", "libcjson1", "libssl3", "libwslay1", "libmicrohttpd12", "libnats3.4",
                    "libc6"]:
            self.assertIn(lib, depends)
        for s in ["cmake", "pkg-config", "nats-server"]:
            self.assertIn(s, self.field("Suggests"))
        self.assertEqual(self.field("Section"), "net")
        self.assertIn("Description: plugin-hosting game server daemon\n",
                      check(["dpkg-deb", "-I", self.deb]))
        conffiles = check(["sh", "-c", "dpkg-deb --ctrl-tarfile \"$1\" | tar -xO ./conffiles",
                           "sh", self.deb])
        self.assertEqual(conffiles, "/etc/pier/server.json\n")

    def test_contents(self):
        files = [line.split()[-1] for line in check(["dpkg-deb", "-c", self.deb]).splitlines()]
        lib = "./usr/lib/%s/pier/plugins/" % MULTIARCH
        for f in ["./usr/bin/pierd", "./usr/bin/pierctl", "./usr/bin/pier-bench",
                  "./usr/bin/pier-new-plugin", "./etc/pier/server.json",
                  "./usr/include/pier/plugin.h", "./usr/include/pier/types.h",
                  lib + "echo.so", lib + "chat.so",
                  "./usr/share/pier/plugins/chat/web/index.html",
                  "./usr/share/pkgconfig/pier-plugin.pc", "./usr/share/cmake/pier/pierConfig.cmake",
                  "./usr/share/cmake/pier/pierConfigVersion.cmake",
                  "./usr/share/cmake/pier/PierPlugin.cmake", "./lib/systemd/system/pierd.service"]:
            self.assertIn(f, files)
        if os.path.exists(os.path.join(SRC, "include", "pier", "plugin.hpp")):
            self.assertIn("./usr/include/pier/plugin.hpp", files)
        for f in files:
            self.assertNotIn("test", f)
        self.assertFalse([f for f in files if f.startswith("./usr/etc")])

    def test_paths_resolve_in_the_tree(self):
        base = os.path.join(self.root, "etc", "pier")
        with open(os.path.join(base, "server.json")) as f:
            conf = json.load(f)
        self.assertEqual(os.path.normpath(os.path.join(base, conf["plugin_dir"])),
                         os.path.join(self.root, "usr", "lib", MULTIARCH, "pier", "plugins"))
        for p in conf["plugins"]:
            self.assertTrue(os.path.isfile(os.path.join(base, p["path"]) + ".so"), p)
        static = [l["static"] for l in conf["listeners"] if "static" in l]
        self.assertTrue(os.path.isfile(os.path.join(base, static[0], "index.html")))
        self.assertEqual(os.path.normpath(os.path.join(base, conf["admin_socket"])),
                         os.path.join(self.root, "var", "run", "pier", "pierd.sock"))
        with open(os.path.join(self.root, "lib", "systemd", "system", "pierd.service")) as f:
            unit = f.read()
        self.assertIn("ExecStart=/usr/bin/pierd --config /etc/pier/server.json\n", unit)
        self.assertIn("Documentation=file:/usr/share/doc/pier/README.md\n", unit)
        with open(os.path.join(self.root, "usr", "share", "pkgconfig", "pier-plugin.pc")) as f:
            pc = f.read()
        self.assertIn("prefix=/usr\nincludedir=${prefix}/include\n", pc)
