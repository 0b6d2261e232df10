"""The metrics listener of a real pierd: its three paths, the exposition
(checked by promtool, every contract family present), numbers that follow
clients as they connect, send and are kicked, `pierctl metrics`, and a port
that cannot be bound."""
import http.client
import signal
import socket
import subprocess
import unittest

from pierprom import (T, connect, metrics_pierd, parse, pierws,
                      plugin_path, promtool_check, recv_exact, request, scrape, value, wait_for)

ECHO = {"name": "echo", "path": plugin_path("echo")}

# The built-in families and their types (README, "Operating pier").
FAMILIES = {
    "pier_build_info": "gauge", "pier_up": "gauge", "pier_ready": "gauge",
    "pier_uptime_seconds": "gauge", "pier_listener_sessions": "gauge",
    "pier_sessions_accepted_total": "counter", "pier_sessions_refused_total": "counter",
    "pier_sessions_closed_total": "counter", "pier_received_bytes_total": "counter",
    "pier_sent_bytes_total": "counter", "pier_received_messages_total": "counter",
    "pier_sent_messages_total": "counter", "pier_send_queue_bytes": "gauge",
    "pier_limit_hits_total": "counter", "pier_handshakes_total": "counter",
    "pier_http_files_total": "counter", "pier_ws_protocol_errors_total": "counter",
    "pier_ws_ping_timeouts_total": "counter", "pier_plugin_info": "gauge",
    "pier_plugin_sessions": "gauge", "pier_plugin_quarantined": "gauge",
    "pier_plugin_failures_total": "counter", "pier_plugin_slow_callbacks_total": "counter",
    "pier_plugin_backlog_bytes": "gauge",
    "pier_plugin_callback_duration_seconds": "histogram",
    "pier_plugin_reloads_total": "counter", "pier_plugin_reload_pause_seconds": "histogram",
    "pier_io_cq_overflows_total": "counter", "pier_io_enobufs_total": "counter",
    "pier_io_rearms_total": "counter", "process_resident_memory_bytes": "gauge",
    "process_open_fds": "gauge", "process_cpu_seconds_total": "counter",
    "process_start_time_seconds": "gauge",
}
REASONS = ["none", "peer_closed", "peer_reset", "io_error", "closed", "kicked",
           "send_queue_full", "packet_too_small", "packet_too_large", "idle_timeout",
           "shutdown", "no_memory", "flush_timeout", "plugin_error", "packet_timeout",
           "send_timeout", "protocol_error", "invalid_text", "ping_timeout", "tls_error",
           "handshake_failed", "handshake_timeout"]
LIMITS = ["max_send_queue", "max_packet_size", "idle_timeout_ms", "packet_timeout_ms",
          "send_timeout_ms", "max_conns_per_ip", "max_sessions", "recv_backlog",
          "handshake_timeout_ms"]


class Metrics(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = metrics_pierd([{"plugin": "echo"}], plugins=(ECHO,))
        cls.port = cls.d.metrics_port
        cls.listener = "127.0.0.1:%d" % cls.d.ports[0]

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def test_paths(self):
        self.assertEqual(request(self.port, "/healthz")[0::2], (200, b"ok\n"))
        self.assertEqual(request(self.port, "/readyz")[0::2], (200, b"ready\n"))
        self.assertEqual(request(self.port, "/metric")[0::2], (404, b"not found\n"))
        status, headers, body = request(self.port, "/metrics", "POST")
        self.assertEqual((status, headers.get("allow"), body),
                         (405, "GET, HEAD", b"method not allowed\n"))
        status, headers, body = request(self.port, "/metrics", "HEAD")
        self.assertEqual((status, body), (200, b""))
        self.assertEqual(headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
        status, headers, body = request(self.port, "/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
        self.assertEqual(int(headers["content-length"]), len(body))

    def test_exposition(self):
        text = request(self.port, "/metrics")[2].decode()
        rc, out = promtool_check(text)
        self.assertEqual((rc, out), (0, ""))
        m = parse(text)
        for name, typ in FAMILIES.items():
            self.assertEqual(m["families"].get(name), typ, name)
            self.assertTrue(m["help"].get(name), name)
        self.assertEqual(value(m, "pier_up"), 1)
        self.assertEqual(value(m, "pier_ready"), 1)
        self.assertEqual(value(m, "pier_build_info", version=pierws_version()), 1)
        self.assertEqual(value(m, "pier_plugin_info", plugin="echo", version="1.0.0",
                               generation="1", file=plugin_path("echo")), 1)
        self.assertEqual(value(m, "pier_plugin_quarantined", plugin="echo"), 0)
        got = sorted(dict(ls)["reason"] for (n, ls) in m["samples"]
                     if n == "pier_sessions_closed_total")
        self.assertEqual(got, sorted(REASONS))
        got = sorted(dict(ls)["limit"] for (n, ls) in m["samples"]
                     if n == "pier_limit_hits_total")
        self.assertEqual(got, sorted(LIMITS))
        for cb in ("on_connected", "on_recv", "on_send", "on_disconnected", "on_tick", "timer",
                   "post"):
            value(m, "pier_plugin_callback_duration_seconds_count", plugin="echo", callback=cb)
        self.assertGreater(value(m, "process_resident_memory_bytes"), 1 << 20)
        self.assertGreater(value(m, "process_open_fds"), 3)

    def test_numbers_follow_clients(self):
        before = scrape(self.port)
        clients = [connect(self.d.ports[0]) for _ in range(3)]
        for i, s in enumerate(clients):
            s.sendall(b"hello %d" % i)
            self.assertEqual(recv_exact(s, 7), b"hello %d" % i)
        # A byte is counted as sent once its send completes on the worker,
        # which may be after the client has read it: wait for that.
        m = wait_for("the 21 bytes counted as sent", lambda: sent_by(self.port, before, 21))
        self.assertEqual(value(m, "pier_listener_sessions", listener=self.listener,
                               plugin="echo", transport="tcp"), 3)
        self.assertEqual(value(m, "pier_received_bytes_total") -
                         value(before, "pier_received_bytes_total"), 21)
        # Kick one (as an operator would): the gauge follows, and so do the
        # clients that leave on their own.
        peer = "127.0.0.1:%d" % clients[1].getsockname()[1]
        sid = [line.split()[0] for line in self.d.pierctl("sessions")[1].splitlines()
               if line.endswith(" echo " + peer)]
        self.assertEqual(len(sid), 1)
        self.assertEqual(self.d.pierctl("kick", sid[0])[:2], (0, "kicked %s\n" % sid[0]))
        self.assertEqual(pierws.wait_eof(clients[1]), b"")
        wait_for("the kicked session closed", lambda: value(
            scrape(self.port), "pier_listener_sessions", listener=self.listener) == 2)
        for s in clients:
            s.close()
        wait_for("every session closed", lambda: value(
            scrape(self.port), "pier_listener_sessions", listener=self.listener) == 0)

    def test_counters_follow_sessions(self):
        def delta(name, **labels):
            return value(m, name, **labels) - value(before, name, **labels)
        before = scrape(self.port)
        a, b = connect(self.d.ports[0]), connect(self.d.ports[0])
        for s in (a, b):
            s.sendall(b"abc")
            self.assertEqual(recv_exact(s, 3), b"abc")
        peer = "127.0.0.1:%d" % a.getsockname()[1]
        sid = [line.split()[0] for line in self.d.pierctl("sessions")[1].splitlines()
               if line.endswith(" echo " + peer)]
        self.assertEqual(self.d.pierctl("kick", sid[0])[0], 0)
        self.assertEqual(pierws.wait_eof(a), b"")
        b.close()
        a.close()
        # The plugin's sessions drop before its on_disconnected runs, and a
        # callback is counted once it has returned: wait until both closes
        # have been through the plugin.
        m = wait_for("both closed, the plugin told", lambda: closed_by(self.port, before, 2))
        self.assertEqual(value(m, "pier_plugin_sessions", plugin="echo"), 0)
        self.assertEqual(delta("pier_sessions_accepted_total", listener=self.listener), 2)
        self.assertEqual(delta("pier_sessions_closed_total", reason="kicked"), 1)
        self.assertEqual(delta("pier_sessions_closed_total", reason="peer_closed"), 1)
        self.assertEqual(delta("pier_received_messages_total"), 2)
        self.assertEqual(delta("pier_sent_messages_total"), 2)
        self.assertEqual(value(m, "pier_send_queue_bytes"), 0)
        for cb, n in (("on_connected", 2), ("on_recv", 2), ("on_disconnected", 2)):
            self.assertEqual(delta("pier_plugin_callback_duration_seconds_count", plugin="echo",
                                   callback=cb), n, cb)

    def test_pierctl_metrics(self):
        rc, out, err = self.d.pierctl("metrics")
        self.assertEqual((rc, err), (0, ""))
        self.assertEqual(promtool_check(out), (0, ""))
        self.assertEqual(parse(out)["families"], scrape(self.port)["families"])

    def test_port_in_use(self):
        d = pierws.Pierd([{"plugin": "echo"}], plugins=(ECHO,),
                         top={"metrics": {"port": self.port}})
        try:
            r = subprocess.run([pierws.pierd_path(), "--config", d.config_path, "--io-backend",
                                pierws.BACKEND], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=T(30))
        finally:
            d.kill()
        log = r.stdout.decode(errors="replace")
        self.assertEqual(r.returncode, 1, log)
        self.assertIn("metrics: cannot listen on 127.0.0.1:%d: Address already in use" %
                      self.port, log)
        self.assertIn("pierd: not started: the metrics listener failed", log)


class Listener(unittest.TestCase):
    """What the "metrics" key promises about the listener itself."""

    def test_off_when_absent(self):
        d = pierws.Pierd([{"plugin": "echo"}], plugins=(ECHO,))
        d.start()
        try:
            self.assertIsNone(d.find_log(r"metrics"))
            rc, out, err = d.pierctl("metrics")  # the numbers are there all the same
            self.assertEqual((rc, promtool_check(out)), (0, (0, "")))
        finally:
            d.stop()

    def test_ipv6(self):
        d = pierws.Pierd([{"plugin": "echo"}], plugins=(ECHO,),
                         top={"metrics": {"address": "::1", "port": 0}})
        d.start()
        try:
            port = int(d.wait_log(r"metrics on http://\[::1\]:(\d+)/metrics$").group(1))
            c = http.client.HTTPConnection("::1", port, timeout=T(10))
            c.request("GET", "/healthz")
            r = c.getresponse()
            self.assertEqual((r.status, r.read()), (200, b"ok\n"))
            c.close()
        finally:
            d.stop()

    def test_connection_cap_and_timeout(self):
        d = metrics_pierd([{"plugin": "echo"}], plugins=(ECHO,))
        try:
            # Clients that never send a request: 4 from one address hold
            # all that address gets (its 5th connection is closed at once,
            # without an answer, while another address is still served) ...
            def idle_from(source, n):
                return [socket.create_connection(("127.0.0.1", d.metrics_port), timeout=T(30),
                                                 source_address=(source, 0)) for _ in range(n)]
            idle = idle_from("127.0.0.1", 4)
            wait_for("the 5th connection from 127.0.0.1 refused",
                     lambda: refused(d.metrics_port))
            self.assertEqual(request(d.metrics_port, "/healthz", source="127.0.0.2")[0::2],
                             (200, b"ok\n"))
            # ... and 16 from four addresses hold every slot: the next one,
            # from a fifth address, is closed at once too.
            for k in (2, 3, 4):
                idle += idle_from("127.0.0.%d" % k, 4)
            wait_for("the 17th connection refused",
                     lambda: refused(d.metrics_port, source="127.0.0.5"))
            # Each idle one is dropped after its 10 s; then requests work again
            # (once the server has counted them gone, a moment after their EOF).
            for s in idle:
                self.assertEqual(pierws.wait_eof(s, T(30)), b"")
                s.close()
            wait_for("served again", lambda: healthy(d.metrics_port))
        finally:
            d.stop()


    def test_served_past_fd_setsize(self):
        # 1100 sessions put pierd's descriptors past select()'s FD_SETSIZE
        # (1024): /metrics is still answered, on a descriptor above it.
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 1300:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
        d = metrics_pierd([{"plugin": "echo"}], plugins=(ECHO,))
        socks = []
        try:
            for _ in range(1100):
                socks.append(connect(d.ports[0]))
            wait_for("1100 sessions open", lambda: value(
                scrape(d.metrics_port), "pier_plugin_sessions", plugin="echo") == 1100)
            status, _, body = request(d.metrics_port, "/metrics")
            self.assertEqual(status, 200)
            self.assertIn(b'pier_plugin_sessions{plugin="echo"} 1100\n', body)
        finally:
            for s in socks:
                s.close()
            d.stop()

    def test_sighup_keeps_it(self):
        d = metrics_pierd([{"plugin": "echo"}], plugins=(ECHO,))
        try:
            d.config["metrics"] = {"port": d.metrics_port + 1 if d.metrics_port < 65535 else 1}
            d.write_config()
            mark = d.mark()
            d.signal(signal.SIGHUP)
            d.wait_log(r"SIGHUP: metrics changed: needs a restart; not applied$", since=mark)
            self.assertEqual(request(d.metrics_port, "/healthz")[0::2], (200, b"ok\n"))
        finally:
            d.stop()

    def test_readyz_during_drain(self):
        d = pierws.Pierd([{"plugin": "echo"}], plugins=(ECHO,),
                         top={"metrics": {"port": 0}, "drain_timeout_ms": int(T(60) * 1000)})
        d.start()
        try:
            port = int(d.find_log(r"metrics on http://127\.0\.0\.1:(\d+)/metrics$").group(1))
            s = connect(d.ports[0])  # keeps the drain going until it leaves
            s.sendall(b"x")
            self.assertEqual(recv_exact(s, 1), b"x")
            self.assertEqual(request(port, "/readyz")[0::2], (200, b"ready\n"))
            d.signal(signal.SIGTERM)
            wait_for("/readyz draining",
                     lambda: request(port, "/readyz")[0::2] == (503, b"draining\n"))
            self.assertEqual(value(scrape(port), "pier_ready"), 0)
            self.assertEqual(request(port, "/healthz")[0::2], (200, b"ok\n"))
            s.sendall(b"y")  # still served while draining
            self.assertEqual(recv_exact(s, 1), b"y")
            s.close()
            self.assertEqual(d.proc.wait(timeout=T(30)), 0)
        finally:
            d.kill()


def sent_by(port, before, n):
    """A scrape once pier_sent_bytes_total is n above before's, else None."""
    m = scrape(port)
    got = value(m, "pier_sent_bytes_total") - value(before, "pier_sent_bytes_total")
    if got > n:
        raise AssertionError("%d bytes sent, more than %d" % (got, n))
    return m if got == n else None


def closed_by(port, before, n):
    """A scrape once n more on_disconnected calls of echo have returned (each
    after the session's other callbacks), else None."""
    m = scrape(port)
    def count(p):
        return value(p, "pier_plugin_callback_duration_seconds_count", plugin="echo",
                     callback="on_disconnected")
    return m if count(m) - count(before) >= n else None


def healthy(port):
    """Whether /healthz answers 200 "ok" (False when the connection is refused)."""
    try:
        return request(port, "/healthz")[0::2] == (200, b"ok\n")
    except (http.client.HTTPException, ConnectionError):
        return False


def refused(port, source="127.0.0.1"):
    """Whether a request on a new connection gets no answer at all."""
    try:
        status = request(port, "/healthz", source=source)[0]
    except (http.client.HTTPException, ConnectionError):
        return True
    raise AssertionError("answered %d" % status)


def pierws_version():
    """The version `pierd --version` prints ("pierd 0.1.0")."""
    out = subprocess.run([pierws.pierd_path(), "--version"], stdout=subprocess.PIPE,
                         text=True, check=True).stdout
    return pierws.re.fullmatch(r"pierd (\S+)\n", out).group(1)


if __name__ == "__main__":
    unittest.main()
