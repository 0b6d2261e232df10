"""README.md's "Running several nodes", run as written: its shell block (the
three routed nats-servers and the three pierd nodes of config/cluster, as
the build copies them), the `pierctl cluster` table it shows, its
"cluster" block against the shipped configs, and its promise that players
on 7801 and 7803 share the room `red`.

What differs from the text: the build is this one (build/ is replaced by
PIER_TEST_BIN, and the cmake line is left out: the build exists), pierd
gets this run's --io-backend, and, as root, --user root (as tools/run
does: "nobody" may not read the build tree). The example's ports are
fixed (4221-4223, 6221-6223, 7801-7803): tests/CMakeLists.txt gives the
cluster entries a resource lock so that two backends never run it at
once."""
import json
import os
import re
import signal
import socket
import subprocess
import time
import unittest

from piercluster import BACKEND, ClusterTest, T, chat_from, joined_notice, rebase, wait_for
from pierws import BIN

SRC = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def section():
    with open(os.path.join(SRC, "README.md")) as f:
        readme = f.read()
    start = readme.index("## Running several nodes\n")
    end = readme.index("\n## ", start + 1)
    return readme[start:end]


class Running:
    """Stands for a pierd the script runs."""

    def poll(self):
        return None


class ExampleNode:
    """Just enough of a Node for Chat and settle(): a name, a port, and
    `pierctl --config` on its config."""

    def __init__(self, name, port):
        self.name, self.port = name, port
        self.proc = Running()
        self.config = os.path.join(BIN, "config", "cluster", name + ".json")

    def status_json(self):
        r = subprocess.run([os.path.join(BIN, "pierctl"), "--config", self.config, "status",
                            "--json"], stdout=subprocess.PIPE, cwd=SRC, timeout=T(20))
        return json.loads(r.stdout)


class ReadmeExample(ClusterTest):
    def setUp(self):
        blocks = re.findall(r"```(\w*)\n(.*?)```", section(), re.S)
        self.sh = [b for lang, b in blocks if lang == "sh"]
        self.json = [b for lang, b in blocks if lang == "json"]
        self.plain = [b for lang, b in blocks if lang == ""]
        self.assertEqual((len(self.sh), len(self.json), len(self.plain)), (1, 1, 1), blocks)

    def run_script(self):
        lines = self.sh[0].splitlines()
        self.assertTrue(lines[0].startswith("cmake "), lines[0])
        script = "\n".join(lines[1:]) + "\n"
        extra = " --io-backend %s" % BACKEND + (" --user root" if os.geteuid() == 0 else "")
        script = re.sub(r"(build/pierd --config \S+)", r"\1" + extra, script)
        self.assertIn(extra, script)
        script = script.replace("build/", BIN + "/")
        proc = subprocess.Popen(["bash", "-c", script], cwd=SRC, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.addCleanup(self.stop_group, proc)
        # The script ends with pierctl's table; its background children
        # (three nats-servers, three pierds) go on, in its process group.
        out = b""
        end = time.monotonic() + T(30)
        while not re.search(rb"(?m)^eu-3 .*\n", out) and time.monotonic() < end:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
        return out.decode(errors="replace")

    def stop_group(self, proc):
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            end = time.monotonic() + wait
            while time.monotonic() < end:
                try:
                    os.killpg(proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        proc.wait()
        proc.stdout.close()

    def test_three_nodes_as_written(self):
        # The config block is what config/cluster's files hold.
        block = json.loads("{" + self.json[0] + "}")["cluster"]
        with open(os.path.join(BIN, "config", "cluster", "eu-1.json")) as f:
            self.assertEqual(json.load(f)["cluster"], block)
        for i in (2, 3):
            with open(os.path.join(BIN, "config", "cluster", "eu-%d.json" % i)) as f:
                self.assertEqual(json.load(f)["cluster"], dict(block, node="eu-%d" % i))

        busy = []
        for port in (4221, 4222, 4223, 6221, 6222, 6223, 7801, 7802, 7803):
            s = socket.socket()
            # As the servers bind (SO_REUSEADDR): connections of an earlier
            # run left in TIME_WAIT do not make a port taken, a listener does.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
            finally:
                s.close()
        self.assertEqual(busy, [], "the example's ports are taken by another process")
        out = self.run_script()
        table = [l for l in out.splitlines() if re.match(r"(NODE|eu-\d) ", l)]
        want = self.plain[0].splitlines()

        def shape(lines):
            return [re.sub(r"\d+\.\d s ago", "N.N s ago", l) for l in lines]
        self.assertEqual(shape(table), shape(want), out)

        # Players of 7801 and 7803 share red.
        self.nodes = [ExampleNode("eu-%d" % i, 7800 + i) for i in (1, 2, 3)]
        rebase(self.nodes)
        n1, n3 = self.nodes[0], self.nodes[2]
        a = self.player(n1, b"red")
        c = self.player(n3, b"red")
        a.notice(joined_notice(c, a, b"red"))
        a.chat(b"hello from 7801")
        for p in (a, c):
            p.expect(*chat_from(a, p, b"hello from 7801"))
        c.chat(b"hello from 7803")
        for p in (a, c):
            p.expect(*chat_from(c, p, b"hello from 7803"))
        wait_for("eu-1's table counts a session on eu-3", lambda: re.search(
            r"(?m)^eu-3 +up +1 ", subprocess.run(
                [os.path.join(BIN, "pierctl"), "--config",
                 os.path.join(BIN, "config", "cluster", "eu-1.json"), "cluster"],
                stdout=subprocess.PIPE, cwd=SRC).stdout.decode()))


if __name__ == "__main__":
    unittest.main()
