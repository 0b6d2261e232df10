"""What the cluster end-to-end tests share: nats-server children (one
server, or three routed into a cluster), pierd nodes of this build joined
to them (tests/ws/pierws.py's Pierd with a "cluster" section), chat clients
that read S_CHAT, S_CHAT_REMOTE and S_SYSTEM, and a NATS client written
here over a plain socket, to watch the bus and to put on it what no pierd
would send.

Everything listens on loopback ports the kernel picks (port 0, or -1 for
nats-server) and read back from the logs. Every process started here is
killed by the test's cleanups, also when the test fails.

The environment is pierws's (tests/CMakeLists.txt sets it per ctest entry):
PIER_TEST_BIN (the build directory) and PIER_TEST_BACKEND (io_uring or
epoll).
"""
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ws"))
import pierws  # noqa: E402
from pierws import (BACKEND, C_CHAT, C_JOIN, S_CHAT, S_SYSTEM, Pierd, T,  # noqa: E402,F401
                    TempDir, pierd_path, pkt, plugin_path, recv_exact)

S_CHAT_REMOTE = 103
NATS_SERVER = os.environ.get("PIER_NATS_SERVER") or "/usr/sbin/nats-server"

# Short presence times keep the node-loss cases fast.
HEARTBEAT_MS = 200
NODE_TIMEOUT_MS = 1500


def wait_for(what, fn, timeout=None, interval=0.05):
    """Polls fn() until it returns a true value, which is returned; fails
    with what after timeout seconds (default 10, scaled)."""
    end = time.monotonic() + (timeout if timeout is not None else T(10))
    last = None
    while True:
        try:
            got = fn()
            if got:
                return got
        except (AssertionError, OSError, ValueError) as e:
            last = e
        if time.monotonic() > end:
            raise AssertionError("never: %s (last: %r)" % (what, last))
        time.sleep(interval)


# ---- nats-server -------------------------------------------------------

class Nats:
    """One nats-server on 127.0.0.1. port: the client port (-1: one the
    server picks, read back from its log); cluster: also listen for routes
    (on a picked port) and solicit routes to these route URLs."""

    def __init__(self, name, port=-1, cluster=False, routes=(), tmp=None):
        self.name = name
        self.port = port
        self.cluster = cluster
        self.cluster_port = -1
        self.routes = list(routes)
        self.http_port = None
        self.proc = None
        self.lines = []
        self.cv = threading.Condition()
        self.eof = False

    @property
    def url(self):
        return "nats://127.0.0.1:%d" % self.port

    @property
    def route_url(self):
        return "nats://127.0.0.1:%d" % self.cluster_port

    def start(self):
        argv = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-m", "-1",
                "-n", self.name]
        if self.cluster:
            argv += ["--cluster", "nats://127.0.0.1:%d" % self.cluster_port,
                     "--cluster_name", "pier"]
            if self.routes:
                argv += ["--routes", ",".join(self.routes)]
        with self.cv:
            self.lines, self.eof = [], False
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        threading.Thread(target=self._reader, args=(self.proc,), daemon=True).start()
        try:
            self.port = int(self.wait_log(r"Listening for client connections on "
                                          r"127\.0\.0\.1:(\d+)").group(1))
            self.http_port = int(self.wait_log(r"Starting http monitor on "
                                               r"127\.0\.0\.1:(\d+)").group(1))
            if self.cluster:
                self.cluster_port = int(self.wait_log(r"Listening for route connections on "
                                                      r"127\.0\.0\.1:(\d+)").group(1))
            self.wait_log(r"Server is ready")
        except AssertionError:
            self.kill()
            raise AssertionError("nats-server %s did not start:\n%s" %
                                 (self.name, self.log_text()))
        return self

    def _reader(self, proc):
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            sys.stderr.write("nats-%s| %s\n" % (self.name, line))
            with self.cv:
                self.lines.append(line)
                self.cv.notify_all()
        with self.cv:
            self.eof = True
            self.cv.notify_all()

    def log_text(self):
        with self.cv:
            return "\n".join(self.lines)

    def wait_log(self, pattern, timeout=None):
        rx = re.compile(pattern)
        end = time.monotonic() + (timeout or T(10))
        with self.cv:
            while True:
                for line in self.lines:
                    m = rx.search(line)
                    if m:
                        return m
                left = end - time.monotonic()
                if left <= 0 or self.eof:
                    raise AssertionError("nats-server %s never logged /%s/" %
                                         (self.name, pattern))
                self.cv.wait(left)

    def monitor(self, path):
        """A monitoring endpoint's JSON (/varz, /routez, /connz)."""
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.http_port, path),
                                    timeout=T(5)) as r:
            return json.loads(r.read())

    def kill(self):
        """SIGKILL, as a crash: no goodbye to clients or routes."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()
            self.proc = None

    def restart(self):
        """The same server again on the same client (and route) port."""
        self.kill()
        return self.start()

    def running(self):
        return self.proc is not None and self.proc.poll() is None


def nats_server(cleanup):
    """One nats-server on a picked port; cleanup(fn) is given its kill."""
    s = Nats("s1")
    cleanup(s.kill)
    return s.start()


def nats_cluster(cleanup, n=3):
    """n routed nats-servers (a full mesh, checked on each one's /routez);
    cleanup(fn) is given each one's kill (a test's addCleanup)."""
    first = Nats("s1", cluster=True)
    cleanup(first.kill)
    first.start()
    servers = [first]
    for i in range(2, n + 1):
        s = Nats("s%d" % i, cluster=True, routes=[first.route_url])
        cleanup(s.kill)
        s.start()
        servers.append(s)
    for s in servers:
        wait_for("nats-server %s has %d routes" % (s.name, n - 1),
                 lambda s=s: s.monitor("/routez")["num_routes"] == n - 1)
    return servers


# ---- pierd nodes -------------------------------------------------------

class Node(Pierd):
    """pierd with the chat plugin (a copy of the build's chat.so in its own
    directory, so a test may replace it) on a u16_size_id listener, an admin
    socket and a "cluster" section: node name, NATS URLs and the short
    presence times unless cluster overrides them."""

    def __init__(self, name, urls, cluster=None, threading_mode="serial", extra_top=None):
        self.name = name
        tmp = TempDir(prefix="pier-cluster-")
        self.chat_so = tmp.join("chat.so")
        shutil.copyfile(plugin_path("chat"), self.chat_so)
        section = {"nats": list(urls), "node": name, "heartbeat_ms": HEARTBEAT_MS,
                   "node_timeout_ms": NODE_TIMEOUT_MS}
        section.update(cluster or {})
        top = {"cluster": section}
        top.update(extra_top or {})
        Pierd.__init__(self, [{"plugin": "chat", "framing": "u16_size_id"}],
                       plugins=[{"name": "chat", "path": self.chat_so,
                                 "threading": threading_mode}],
                       top=top, tmp=tmp)
        self.own_tmp = True

    def _reader(self):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            sys.stderr.write("%s| %s\n" % (self.name, line))
            with self.cv:
                self.lines.append(line)
                self.cv.notify_all()
        with self.cv:
            self.eof = True
            self.cv.notify_all()

    @property
    def port(self):
        return self.ports[0]

    def argv(self):
        argv = [pierd_path(), "--config", self.config_path, "--io-backend", BACKEND]
        if os.geteuid() == 0:
            argv += ["--user", "root"]
        return argv

    def ctl(self, *args):
        """pierctl on this node; fails unless it exits 0. Its output."""
        rc, out, err = self.pierctl(*args)
        if rc != 0:
            raise AssertionError("%s: pierctl %s: exit %d: %s%s" %
                                 (self.name, " ".join(args), rc, out, err))
        return out

    def cluster_json(self):
        return json.loads(self.ctl("cluster", "--json"))

    def status_json(self):
        return json.loads(self.ctl("status", "--json"))

    def peers(self):
        """{node: entry} of `cluster --json`'s nodes."""
        return {n["node"]: n for n in self.cluster_json()["nodes"]}

    def sees_up(self, names):
        peers = self.peers()
        return all(n in peers and peers[n]["state"] == "up" for n in names)

    def count(self, pattern, since=0):
        rx = re.compile(pattern)
        with self.cv:
            return sum(1 for line in self.lines[since:] if rx.search(line))


def bus_counts(nodes):
    """Each node's (messages_in, messages_out) from `status --json`."""
    out = []
    for n in nodes:
        st = n.status_json()["cluster"]
        out.append((st["messages_in"], st["messages_out"]))
    return out


def rebase(nodes):
    """Marks where the nodes' bus counters stand now, for settle(); call it
    when no message is in flight (after start_nodes, after a node came)."""
    def quiet():
        a = bus_counts(nodes)
        time.sleep(2 * HEARTBEAT_MS / 1000.0)
        return a == bus_counts(nodes)
    wait_for("the bus is quiet", quiet)
    base = bus_counts(nodes)
    for n, c in zip(nodes, base):
        n.bus_base = c


def settle(nodes, timeout=None):
    """Waits until every message the nodes' plugins published since
    rebase() has been given to the plugin on every node: the chat plugin on
    each node subscribes to all of its rooms, so each publish comes in once
    on every node, its publisher included. A join on one node is then known
    on the others before the test's next step (the bus is asynchronous: a
    player who joins on B right after one joined on A could otherwise get
    A's join notice after its own, which is right, but not what a
    byte-exact sequence can expect)."""
    def done():
        now = bus_counts(nodes)
        sent = sum(o - n.bus_base[1] for n, (_, o) in zip(nodes, now))
        return all(i - n.bus_base[0] >= sent for n, (i, _) in zip(nodes, now))
    wait_for("every node has every bus message", done, timeout)


def joined_line(name, url):
    return r'cluster: node "%s" joined the bus at %s$' % (re.escape(name), re.escape(url))


def start_nodes(cleanup, urls, names=("eu-1", "eu-2", "eu-3"), cluster=None, threading=None,
                per_node_urls=None):
    """Starts one node per name on the NATS urls (per_node_urls[i] instead,
    when given), waits until each has joined the bus and sees every other
    one up; cleanup(fn) is given each one's kill. threading: {name: "serial"|"session"}."""
    nodes = []
    for i, name in enumerate(names):
        u = per_node_urls[i] if per_node_urls else urls
        n = Node(name, u, cluster=cluster, threading_mode=(threading or {}).get(name, "serial"))
        cleanup(n.kill)
        n.start()
        n.wait_log(r'cluster: node "%s" joined the bus at nats://127\.0\.0\.1:\d+$' %
                   re.escape(name))
        nodes.append(n)
    for n in nodes:
        others = [m.name for m in nodes if m is not n]
        wait_for("%s sees %s up" % (n.name, others), lambda n=n, o=others: n.sees_up(o))
    rebase(nodes)
    return nodes


# ---- chat clients ------------------------------------------------------

def remote_body(node, sid, text):
    """S_CHAT_REMOTE's body: u8 node_len | node | u64 sid LE | text."""
    node = node.encode() if isinstance(node, str) else node
    return bytes([len(node)]) + node + struct.pack("<Q", sid) + text


def local_body(sid, text):
    return struct.pack("<Q", sid) + text


class Chat:
    """A chat player on one node. node: the Node, for the names in the
    notices others see (node.name + "/" + sid)."""

    def __init__(self, node, timeout=None):
        self.node = node
        self.timeout = timeout or T(10)
        self.sock = socket.create_connection(("127.0.0.1", node.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sid = None
        self.buf = b""

    @property
    def ref(self):
        """How other nodes' notices name this player: b"eu-1/123"."""
        return b"%s/%d" % (self.node.name.encode(), self.sid)

    def send(self, pid, body):
        self.sock.sendall(pkt(pid, body))

    def chat(self, text):
        self.send(C_CHAT, text)

    def _fill(self, n, timeout):
        self.sock.settimeout(timeout)
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("EOF after %d bytes" % len(self.buf))
            self.buf += chunk

    def recv(self, timeout=None):
        """The next packet (id, body); socket.timeout when none comes."""
        t = timeout if timeout is not None else self.timeout
        self._fill(4, t)
        size, pid = struct.unpack("<HH", self.buf[:4])
        if size < 4:
            raise AssertionError("packet size %d" % size)
        self._fill(size, t)
        body, self.buf = self.buf[4:size], self.buf[size:]
        return pid, body

    def expect(self, pid, body, timeout=None):
        got = self.recv(timeout)
        if got != (pid, body):
            raise AssertionError("%s player %s: expected %r, got %r" %
                                 (self.node.name, self.sid, (pid, body), got))

    def notice(self, text, timeout=None):
        self.expect(S_SYSTEM, text, timeout)

    def quiet(self, seconds=0.3):
        """Nothing arrives for this long."""
        try:
            got = self.recv(seconds)
        except socket.timeout:
            return
        raise AssertionError("%s player %s: unexpected %r" % (self.node.name, self.sid, got))

    def join(self, room):
        """C_JOIN, then its own join notice: the session id."""
        self.send(C_JOIN, room)
        pid, body = self.recv()
        m = re.fullmatch(rb"(\d+) joined " + re.escape(room), body)
        if pid != S_SYSTEM or not m:
            raise AssertionError("%s: expected the own join notice of %r, got %r" %
                                 (self.node.name, room, (pid, body)))
        sid = int(m.group(1))
        if self.sid is not None and sid != self.sid:
            raise AssertionError("session id changed: %d then %d" % (self.sid, sid))
        self.sid = sid
        return sid

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def chat_from(sender, receiver, text):
    """The packet receiver gets when sender says text: S_CHAT from its own
    node, S_CHAT_REMOTE from another."""
    if sender.node is receiver.node:
        return S_CHAT, local_body(sender.sid, text)
    return S_CHAT_REMOTE, remote_body(sender.node.name, sender.sid, text)


def joined_notice(who, receiver, room):
    """The notice receiver gets when who joins room."""
    if who.node is receiver.node:
        return b"%d joined %s" % (who.sid, room)
    return b"%s joined %s" % (who.ref, room)


def left_notice(who, receiver, room):
    if who.node is receiver.node:
        return b"%d left %s" % (who.sid, room)
    return b"%s left %s" % (who.ref, room)


# ---- NATS by hand ------------------------------------------------------

class NatsClient:
    """The NATS text protocol over a socket: enough to publish anything,
    subscribe, and see what the nodes publish (MSG lines kept in
    self.msgs as (subject, reply, payload))."""

    def __init__(self, port, name="pier-test"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=T(10))
        self.buf = b""
        line = self._line()
        if not line.startswith(b"INFO "):
            raise AssertionError("nats-server greeted with %r" % line)
        self.info = json.loads(line[5:])
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"name":"%s",'
                          b'"protocol":1}\r\n' % name.encode())
        self.msgs = []
        self.cv = threading.Condition()
        self.pongs = 0
        self.closed = False
        self.next_sid = 1
        self.lock = threading.Lock()
        threading.Thread(target=self._reader, daemon=True).start()
        self.flush()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("nats-server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("nats-server closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _reader(self):
        self.sock.settimeout(None)
        try:
            while True:
                line = self._line()
                if line.startswith(b"MSG "):
                    parts = line.split()
                    subject = parts[1].decode()
                    reply = parts[3].decode() if len(parts) == 5 else None
                    payload = self._exact(int(parts[-1]) + 2)[:-2]
                    with self.cv:
                        self.msgs.append((subject, reply, payload))
                        self.cv.notify_all()
                elif line == b"PING":
                    with self.lock:
                        self.sock.sendall(b"PONG\r\n")
                elif line == b"PONG":
                    with self.cv:
                        self.pongs += 1
                        self.cv.notify_all()
                elif line.startswith(b"-ERR"):
                    sys.stderr.write("nats client| %s\n" % line.decode(errors="replace"))
        except (OSError, EOFError):
            pass
        with self.cv:
            self.closed = True
            self.cv.notify_all()

    def _send(self, data):
        with self.lock:
            self.sock.sendall(data)

    def flush(self, timeout=None):
        """PING and wait for its PONG: the server has taken everything sent."""
        with self.cv:
            want = self.pongs + 1
        self._send(b"PING\r\n")
        end = time.monotonic() + (timeout or T(10))
        with self.cv:
            while self.pongs < want:
                left = end - time.monotonic()
                if left <= 0 or self.closed:
                    raise AssertionError("no PONG from nats-server")
                self.cv.wait(left)

    def sub(self, subject):
        sid = self.next_sid
        self.next_sid += 1
        self._send(b"SUB %s %d\r\n" % (subject.encode(), sid))
        return sid

    def pub(self, subject, payload, reply=None):
        subject = subject.encode() if isinstance(subject, str) else subject
        head = b"PUB " + subject + (b" " + reply.encode() if reply else b"")
        self._send(head + b" %d\r\n" % len(payload) + payload + b"\r\n")

    def seen(self):
        with self.cv:
            return list(self.msgs)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class ClusterTest(unittest.TestCase):
    """A case with helpers to close what it opens at its end."""

    nodes = ()  # the running nodes, for settle() after each join

    def player(self, node, room=None):
        """A player on node, in room when given; its join is known on every
        node of self.nodes when this returns."""
        c = Chat(node)
        self.addCleanup(c.close)
        if room is not None:
            c.join(room)
            live = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
            if live:
                settle(live)
        return c

    def nats_client(self, port):
        c = NatsClient(port)
        self.addCleanup(c.close)
        return c
