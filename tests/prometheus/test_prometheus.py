"""A real Prometheus server (Debian's prometheus) scrapes a real pierd every
second while clients connect, send and are kicked; its HTTP API must then
report what the clients did. The server runs on a free loopback port with
its storage in a temporary directory (never the system's
/var/lib/prometheus), and is stopped at the end whatever happens."""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import unittest
import urllib.parse
import urllib.request

from pierprom import (T, connect, metrics_pierd, pierws,
                      plugin_path, recv_exact, wait_for)

ECHO = {"name": "echo", "path": plugin_path("echo")}


# The port prometheus bound, from its log (it is told port 0: a port picked
# here and bound there later could be taken meanwhile by another test).
LISTENING_RX = re.compile(r'msg="Listening on" address=127\.0\.0\.1:(\d+)')


class Prometheus:
    """prometheus scraping 127.0.0.1:target_port every second."""

    def __init__(self, target_port):
        self.dir = tempfile.mkdtemp(prefix="pier-prom-")
        self.port = None
        with open(os.path.join(self.dir, "prometheus.yml"), "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: pier\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n" % target_port)
        self.log = open(os.path.join(self.dir, "prometheus.log"), "wb")
        self.proc = subprocess.Popen(
            ["prometheus", "--config.file", os.path.join(self.dir, "prometheus.yml"),
             "--storage.tsdb.path", os.path.join(self.dir, "data"),
             "--web.listen-address", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path, **params):
        url = "http://127.0.0.1:%d%s" % (self.port, path)
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=T(10)) as r:
            return r.status, r.read()

    def ready(self):
        if self.proc.poll() is not None:
            raise AssertionError("prometheus exited %r:\n%s" % (self.proc.returncode,
                                                                 self.log_text()))
        if self.port is None:
            m = LISTENING_RX.search(self.log_text())
            if not m:
                return False
            self.port = int(m.group(1))
        try:
            return self.get("/-/ready")[0] == 200
        except OSError:
            return False

    def query(self, q):
        """The value of an instant query with one result, or None."""
        body = json.loads(self.get("/api/v1/query", query=q)[1])
        if body["status"] != "success":
            raise AssertionError("query %s: %r" % (q, body))
        res = body["data"]["result"]
        if len(res) != 1:
            return None
        return float(res[0]["value"][1])

    def log_text(self):
        self.log.flush()
        with open(os.path.join(self.dir, "prometheus.log"), errors="replace") as f:
            return f.read()

    def close(self):
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=T(20))
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            self.log.close()
            shutil.rmtree(self.dir, ignore_errors=True)


class ScrapedByPrometheus(unittest.TestCase):
    def setUp(self):
        self.d = metrics_pierd([{"plugin": "echo"}], plugins=(ECHO,))
        self.addCleanup(self.d.stop)
        self.prom = Prometheus(self.d.metrics_port)
        self.addCleanup(self.prom.close)
        wait_for("prometheus ready", self.prom.ready, T(60))
        self.listener = "127.0.0.1:%d" % self.d.ports[0]

    def wait_value(self, q, want):
        wait_for("%s == %r (prometheus log:\n%s)" % (q, want, self.prom.log_text()[-2000:]),
                 lambda: self.prom.query(q) == want, T(60))

    def test_sees_what_clients_do(self):
        self.wait_value('up{job="pier"}', 1)
        self.wait_value("pier_ready", 1)
        clients = [connect(self.d.ports[0]) for _ in range(4)]
        for i, s in enumerate(clients):
            s.sendall(b"ping %d" % i)
            self.assertEqual(recv_exact(s, 6), b"ping %d" % i)
        self.wait_value('pier_listener_sessions{listener="%s",plugin="echo"}' % self.listener, 4)
        self.wait_value("pier_received_bytes_total", 24)
        self.wait_value("pier_sent_bytes_total", 24)
        # Kicked by an operator, then the others leave.
        peer = "127.0.0.1:%d" % clients[0].getsockname()[1]
        sid = [line.split()[0] for line in self.d.pierctl("sessions")[1].splitlines()
               if line.endswith(" echo " + peer)]
        self.assertEqual(len(sid), 1)
        self.assertEqual(self.d.pierctl("kick", sid[0])[0], 0)
        self.assertEqual(pierws.wait_eof(clients[0]), b"")
        self.wait_value('pier_listener_sessions{listener="%s"}' % self.listener, 3)
        for s in clients:
            s.close()
        self.wait_value('pier_listener_sessions{listener="%s"}' % self.listener, 0)
        self.wait_value('pier_plugin_info{plugin="echo",generation="1"}', 1)
        # The target is healthy, with no error. Its state is that of the last
        # scrape only, and a scrape can miss its 1 s timeout on a busy
        # machine; an exposition prometheus cannot read fails every one.
        self.assertEqual(wait_for("the target healthy", self.target_health, T(60)),
                         [("up", "")])

    def target_health(self):
        body = json.loads(self.prom.get("/api/v1/targets")[1])
        got = [(t["health"], t["lastError"]) for t in body["data"]["activeTargets"]]
        if got != [("up", "")]:
            raise AssertionError("targets %r" % got)
        return got

    def test_sees_sessions_counted(self):
        self.wait_value('up{job="pier"}', 1)
        clients = [connect(self.d.ports[0]) for _ in range(3)]
        for s in clients:
            s.sendall(b"x")
            self.assertEqual(recv_exact(s, 1), b"x")
        peer = "127.0.0.1:%d" % clients[0].getsockname()[1]
        sid = [line.split()[0] for line in self.d.pierctl("sessions")[1].splitlines()
               if line.endswith(" echo " + peer)]
        self.assertEqual(self.d.pierctl("kick", sid[0])[0], 0)
        self.assertEqual(pierws.wait_eof(clients[0]), b"")
        for s in clients:
            s.close()
        self.wait_value('pier_sessions_accepted_total{listener="%s"}' % self.listener, 3)
        self.wait_value('pier_sessions_closed_total{reason="kicked"}', 1)
        self.wait_value('pier_sessions_closed_total{reason="peer_closed"}', 2)
        self.wait_value("pier_received_messages_total", 3)
        self.wait_value('pier_plugin_sessions{plugin="echo"}', 0)
        self.wait_value('sum(pier_plugin_callback_duration_seconds_count'
                        '{plugin="echo",callback="on_recv"})', 3)


if __name__ == "__main__":
    unittest.main()
