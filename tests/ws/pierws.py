"""What the WebSocket and TLS end-to-end tests share: a real pierd child on a
temporary server.json (this build's pierd and plugins), the recorder plugin's
output, certificates made with the openssl command, a raw WebSocket client
for what no well-behaved client sends, a TLS client over memory BIOs for
records no SSLSocket sends, and the packets of the chat and stall plugins.

The environment picks the build and the backend (tests/CMakeLists.txt sets
both for each ctest entry):
  PIER_TEST_BIN      the build directory (pierd, pierctl, plugins/, tests/plugins/)
  PIER_TEST_BACKEND  io_uring or epoll (default epoll)
Under a sanitizer build (ASAN_OPTIONS or TSAN_OPTIONS set) every wait is
given more time; nothing here measures speed.
"""
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.abspath(os.environ.get("PIER_TEST_BIN") or os.path.join(HERE, "..", "..", "build"))
BACKEND = os.environ.get("PIER_TEST_BACKEND") or "epoll"
SCALE = 3.0 if (os.environ.get("ASAN_OPTIONS") or os.environ.get("TSAN_OPTIONS")) else 1.0


def T(seconds):
    """A timeout, longer under the sanitizers."""
    return seconds * SCALE


# pier_reason values and their texts (include/pier/types.h).
REASONS = {
    1: "peer closed the connection",
    2: "connection reset by peer",
    4: "closed by the server",
    5: "kicked by an operator",
    6: "send queue over max_send_queue (peer not reading)",
    7: "packet size below the 4-byte header",
    8: "packet size above max_packet_size",
    9: "idle timeout",
    10: "server shutting down",
    13: "plugin failed",
    14: "partial packet not completed within packet_timeout_ms",
    15: "no send progress within send_timeout_ms (peer not reading)",
    16: "protocol error from the client",
    17: "invalid UTF-8 in a text message",
    18: "no answer to keepalive ping",
    19: "TLS error",
    20: "handshake failed",
    21: "handshake not completed within handshake_timeout_ms",
}
PEER_CLOSED, PEER_RESET, CLOSED, KICKED, SEND_QUEUE_FULL, IDLE_TIMEOUT = 1, 2, 4, 5, 6, 9
PACKET_TOO_SMALL, PACKET_TOO_LARGE, SHUTDOWN, PLUGIN_ERROR, PACKET_TIMEOUT, SEND_TIMEOUT = (
    7, 8, 10, 13, 14, 15)
PROTOCOL_ERROR, BAD_UTF8, PING_TIMEOUT, TLS_ERROR, HANDSHAKE_FAILED, HANDSHAKE_TIMEOUT = (
    16, 17, 18, 19, 20, 21)

SANITIZER_RX = re.compile(r"ERROR: (Address|Leak|Thread)Sanitizer|runtime error:|"
                          r"WARNING: ThreadSanitizer")


def pierd_path():
    return os.path.join(BIN, "pierd")


def pierctl_path():
    return os.path.join(BIN, "pierctl")


def plugin_path(name):
    return os.path.join(BIN, "plugins", name + ".so")


def test_plugin_path(name):
    return os.path.join(BIN, "tests", "plugins", name + ".so")


class TempDir:
    """A directory under /tmp, removed by close()."""

    def __init__(self, prefix="pier-ws-"):
        self.path = tempfile.mkdtemp(prefix=prefix)

    def join(self, *parts):
        return os.path.join(self.path, *parts)

    def write(self, name, data, mode=0o644):
        p = self.join(name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.chmod(p, mode)
        return p

    def close(self):
        shutil.rmtree(self.path, ignore_errors=True)


# ---- certificates --------------------------------------------------------

def make_cert(cert, key, cn, days=2):
    """A self-signed P-256 certificate for 127.0.0.1 / localhost, subject CN=cn."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", str(days), "-subj", "/CN=" + cn,
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=T(30))


def cert_subject(pem_text):
    """The subject line `openssl x509 -noout -subject` prints for a PEM."""
    r = subprocess.run(["openssl", "x509", "-noout", "-subject"], input=pem_text.encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=T(10), check=True)
    return r.stdout.decode().strip()


def client_context(cafile):
    """A TLS client context that trusts only cafile and checks the host name."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = True
    return ctx


# ---- pierd -------------------------------------------------------------

class Pierd:
    """pierd as a child process on a server.json written into its own
    temporary directory. plugins: the names to load, from "chat" (the build's
    chat plugin, serial), "rec" (tests/plugins/recorder) and "stall"
    (tests/plugins/stall), both writing their lines to self.rec_path; or a
    plugin entry (a dict) written as given, its "path" and, for rec and
    stall, its config's "out" filled in when absent. Listener entries are
    written as given (port 0 unless set); self.ports[i] is the port
    listeners[i] bound."""

    def __init__(self, listeners, plugins=("chat", "rec"), limits=None, top=None, tmp=None):
        self.tmp = tmp or TempDir()
        self.own_tmp = tmp is None
        self.rec_path = self.tmp.join("rec.txt")
        self.sock = self.tmp.join("pierd.sock")
        entries = []
        for name in plugins:
            if isinstance(name, dict):
                entry = dict(name)
                own = {"rec": "recorder", "stall": "stall"}.get(entry["name"])
                if own:
                    entry.setdefault("path", test_plugin_path(own))
                    entry["config"] = dict({"out": self.rec_path}, **entry.get("config", {}))
                entries.append(entry)
            elif name == "chat":
                entries.append({"name": "chat", "path": plugin_path("chat"), "threading": "serial"})
            elif name == "rec":
                entries.append({"name": "rec", "path": test_plugin_path("recorder"),
                                "config": {"out": self.rec_path}})
            elif name == "stall":
                entries.append({"name": "stall", "path": test_plugin_path("stall"),
                                "config": {"out": self.rec_path}})
            else:
                raise ValueError(name)
        self.config = {"workers": 2, "log_level": "info", "admin_socket": self.sock,
                       "plugins": entries,
                       "listeners": [dict({"address": "127.0.0.1", "port": 0}, **l)
                                     for l in listeners]}
        if limits:
            self.config["limits"] = limits
        if top:
            self.config.update(top)
        self.config_path = self.tmp.join("server.json")
        self.write_config()
        self.proc = None
        self.lines = []
        self.cv = threading.Condition()
        self.eof = False
        self.ports = []
        # Where the recorder's file ended just before connect() opened a
        # connection to this pierd, by the client's local port (see rec_sid).
        self.rec_marks = {}

    def write_config(self):
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=1)

    def start(self):
        argv = [pierd_path(), "--config", self.config_path, "--io-backend", BACKEND]
        if os.geteuid() == 0 and "user" not in self.config:
            # As root pierd would drop to "nobody", who may not read the
            # build tree (a checkout under /root): keep root, as tools/run does.
            argv += ["--user", "root"]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._reader, daemon=True).start()
        try:
            self.wait_log(r"pierd ready", T(20))
        except AssertionError:
            self.kill()
            raise AssertionError("pierd did not start:\n" + self.log_text())
        with self.cv:
            for line in self.lines:
                m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
                if m:
                    self.ports.append(int(m.group(1)))
        if len(self.ports) != len(self.config["listeners"]):
            raise AssertionError("listeners %d, ports seen %r" %
                                 (len(self.config["listeners"]), self.ports))
        _running.append(self)
        return self

    def _reader(self):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            sys.stderr.write("pierd| %s\n" % line)
            with self.cv:
                self.lines.append(line)
                self.cv.notify_all()
        with self.cv:
            self.eof = True
            self.cv.notify_all()

    def mark(self):
        """A position in the log: wait_log(..., since=mark) looks after it."""
        with self.cv:
            return len(self.lines)

    def log_text(self):
        with self.cv:
            return "\n".join(self.lines)

    def find_log(self, pattern, since=0):
        rx = re.compile(pattern)
        with self.cv:
            for line in self.lines[since:]:
                m = rx.search(line)
                if m:
                    return m
        return None

    def wait_log(self, pattern, timeout=None, since=0):
        """The first match of pattern in a log line (after since); fails
        after timeout seconds (default 10, scaled) or at pierd's exit."""
        rx = re.compile(pattern)
        end = time.monotonic() + (timeout if timeout is not None else T(10))
        with self.cv:
            while True:
                for line in self.lines[since:]:
                    m = rx.search(line)
                    if m:
                        return m
                left = end - time.monotonic()
                if left <= 0 or self.eof:
                    raise AssertionError("pierd never logged /%s/" % pattern)
                self.cv.wait(left)

    def assert_alive(self):
        """pierd runs and has logged no sanitizer report."""
        bad = SANITIZER_RX.search(self.log_text())
        if bad:
            raise AssertionError("sanitizer report in pierd's log: %s" % bad.group(0))
        if self.proc.poll() is not None:
            raise AssertionError("pierd exited %r" % self.proc.returncode)

    def status(self):
        """`pierctl status`: its output."""
        rc, out, err = self.pierctl("status")
        if rc != 0:
            raise AssertionError("pierctl status: %d %s" % (rc, err))
        return out

    def console(self, line):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def pierctl(self, *args, timeout=None):
        """Runs the build's pierctl on this pierd's admin socket: (status, out, err)."""
        r = subprocess.run([pierctl_path(), "--socket", self.sock] + list(args),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout or T(20))
        return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def status_kb(self, key):
        """A field of /proc/PID/status in kB (VmRSS, VmHWM)."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise AssertionError("no %s in /proc/%d/status" % (key, self.proc.pid))

    # The recorder's lines: "connected SID PEER", "recv SID LEN",
    # "send SID LEN", "disconnected SID REASON".
    def rec_lines(self):
        try:
            with open(self.rec_path) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def wait_rec(self, pattern, timeout=None, start=0):
        """The first recorder line matching pattern from line `start` on
        (polled: the recorder writes a file, there is nothing to wait on)."""
        rx = re.compile(pattern)
        end = time.monotonic() + (timeout if timeout is not None else T(10))
        while True:
            for line in self.rec_lines()[start:]:
                m = rx.fullmatch(line)
                if m:
                    return m
            if time.monotonic() >= end:
                raise AssertionError("recorder never wrote /%s/; it has:\n%s" %
                                     (pattern, "\n".join(self.rec_lines())))
            time.sleep(0.02)

    def rec_sid(self, sock_or_port, timeout=None):
        """The session id (hex, as the recorder and `sessions` write it) of
        the connection whose local port is sock_or_port's. The kernel hands
        a local port out again (to a connection to another listener, or once
        the old one is gone), so an earlier session of this pierd may have
        had the same one: for a connection opened by connect(), only the
        lines written after it started are searched."""
        if isinstance(sock_or_port, int):
            port, start = sock_or_port, self.rec_marks.get(sock_or_port, 0)
        else:
            port = sock_or_port.getsockname()[1]
            start = self.rec_marks.get((port, sock_or_port.getpeername()[1]),
                                       self.rec_marks.get(port, 0))
        return self.wait_rec(r"connected ([0-9a-f]{16}) 127\.0\.0\.1:%d" % port, timeout,
                             start).group(1)

    def rec_reason(self, sid, timeout=None):
        """The reason number the recorder's on_disconnected got for sid."""
        return int(self.wait_rec(r"disconnected %s (\d+)" % sid, timeout).group(1))

    def rec_recv_lengths(self, sid):
        out = []
        for line in self.rec_lines():
            m = re.fullmatch(r"recv %s (\d+)" % sid, line)
            if m:
                out.append(int(m.group(1)))
        return out

    def stop(self, timeout=None):
        """`quit` on the console; returns pierd's exit status (it must exit
        0 with no sanitizer report, or this raises). The temporary
        directory goes in any case."""
        if self.proc is None:
            return None
        rc = None
        try:
            if self.proc.poll() is None:
                try:
                    self.console("quit")
                except BrokenPipeError:  # exiting already
                    pass
            rc = self.proc.wait(timeout=timeout or T(30))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("pierd did not exit after quit")
        finally:
            with self.cv:
                end = time.monotonic() + T(5)
                while not self.eof and time.monotonic() < end:
                    self.cv.wait(0.1)
            self._release()
        bad = SANITIZER_RX.search(self.log_text())
        if bad:
            raise AssertionError("sanitizer report in pierd's log: %s" % bad.group(0))
        if rc != 0:
            raise AssertionError("pierd exited %r, expected 0" % rc)
        return rc

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self._release()

    def _release(self):
        if self in _running:
            _running.remove(self)
        try:
            if self.proc is not None:
                for f in (self.proc.stdin, self.proc.stdout):
                    try:
                        f.close()
                    except OSError:  # a "quit" left in the buffer of a closed pipe
                        pass
                self.proc = None
        finally:
            if self.own_tmp:
                self.tmp.close()


def run_check(config_path, timeout=None):
    """`pierd --check --config FILE`: (status, output)."""
    r = subprocess.run([pierd_path(), "--check", "--config", config_path],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout or T(30))
    return r.returncode, r.stdout.decode(errors="replace")


# ---- sockets -----------------------------------------------------------

# The pierds started and not yet stopped, for connect() to mark.
_running = []


def connect(port, timeout=None, rcvbuf=None, local_port=None):
    """A TCP connection to 127.0.0.1:port; local_port picks the client's
    port, as the kernel may (tests of what a reused port does), with
    SO_REUSEADDR: a port whose last connection is still closing is bound
    only when that connection had it too."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if local_port is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", local_port))
    s.settimeout(timeout or T(10))
    d = next((d for d in _running if port in d.ports), None)
    mark = len(d.rec_lines()) if d else 0  # before: the session's lines come after
    s.connect(("127.0.0.1", port))
    if d:
        local = s.getsockname()[1]
        d.rec_marks[local] = d.rec_marks[(local, port)] = mark
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError("EOF after %d of %d bytes" % (len(data), n))
        data += chunk
    return data


def wait_eof(s, timeout=None):
    """Reads (and returns) whatever comes until the peer closes; fails
    (socket.timeout) when it stays open past timeout."""
    s.settimeout(timeout or T(10))
    got = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return got
        if not chunk:
            return got
        got += chunk


def read_http(s, timeout=None):
    """One HTTP response head from s: (status, headers, rest) where headers
    is a list of (lower-case name, value) and rest the bytes after the head.
    Raises EOFError when the connection ends before a whole head."""
    s.settimeout(timeout or T(10))
    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            chunk = s.recv(4096)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise EOFError("connection closed after %r" % buf)
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    m = re.fullmatch(r"HTTP/1\.1 (\d{3}) .*", lines[0])
    if not m:
        raise AssertionError("bad status line %r" % lines[0])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return int(m.group(1)), headers, rest


def header(headers, name):
    """The value of header name (None when absent); fails when repeated."""
    values = [v for n, v in headers if n == name.lower()]
    if len(values) > 1:
        raise AssertionError("header %s repeated: %r" % (name, values))
    return values[0] if values else None


def http_exchange(port, request, timeout=None, ctx=None):
    """Sends request (bytes) on a new connection; reads the whole response
    up to the server's close: (status, headers, body)."""
    s = connect(port, timeout)
    if ctx:
        s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
    try:
        s.sendall(request)
        status, headers, rest = read_http(s, timeout)
        body = rest + wait_eof(s, timeout)
        return status, headers, body
    finally:
        s.close()


def http_get(port, path, method="GET", extra=""):
    return http_exchange(port, ("%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n" %
                                (method, path, port, extra)).encode())


# ---- WebSocket -----------------------------------------------------------

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def new_key():
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def upgrade_request(port, path="/", key=None, version=13, origin=None, extra=""):
    lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port, "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: %s" % (key or new_key()),
             "Sec-WebSocket-Version: %s" % version]
    if origin is not None:
        lines.append("Origin: %s" % origin)
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length=None, key=None):
    """One client frame; length overrides the encoded payload length, key
    the (random) masking key."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = key if key is not None else os.urandom(4)
    if key == b"\0\0\0\0":
        return head + key + payload
    return head + key + bytes(c ^ key[i & 3] for i, c in enumerate(payload))


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


class Frame:
    def __init__(self, fin, rsv, opcode, payload, head=b""):
        self.fin, self.rsv, self.opcode, self.payload = fin, rsv, opcode, payload
        self.head = head  # the frame's header bytes as sent

    @property
    def shortest(self):
        """Whether the header encodes the length in its shortest form
        (RFC 6455 5.2)."""
        n = len(self.payload)
        return len(self.head) == (2 if n < 126 else 4 if n < 65536 else 10)

    @property
    def code(self):
        """A close frame's status code (None when it has none)."""
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def reason(self):
        """A close frame's reason text."""
        return self.payload[2:].decode("utf-8")

    def __repr__(self):
        return "Frame(fin=%d rsv=%d op=%d %r)" % (self.fin, self.rsv, self.opcode,
                                                   self.payload[:64])


class RawWS:
    """A WebSocket client on a plain socket that sends whatever frames it is
    told to and checks every frame the server sends (unmasked, no RSV)."""

    def __init__(self, port, path="/", ctx=None, timeout=None, origin=None, rcvbuf=None,
                 handshake=True, sock=None):
        self.port = port
        self.timeout = timeout or T(10)
        if sock is not None:  # a connected socket, or a BioTLS
            self.sock = sock
            self.local_port = getattr(sock, "local_port", None) or sock.getsockname()[1]
        else:
            self.sock = connect(port, self.timeout, rcvbuf=rcvbuf)
            self.local_port = self.sock.getsockname()[1]
            if ctx:
                self.sock = ctx.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.buf = b""
        if handshake:
            key = new_key()
            self.sock.sendall(upgrade_request(port, path, key, origin=origin))
            status, headers, self.buf = read_http(self.sock, self.timeout)
            if status != 101:
                raise AssertionError("handshake: %d %r" % (status, headers))
            if header(headers, "sec-websocket-accept") != accept_for(key):
                raise AssertionError("bad Sec-WebSocket-Accept in %r" % headers)

    def send(self, data):
        self.sock.sendall(data)

    def send_frame(self, opcode, payload=b"", **kw):
        self.sock.sendall(frame(opcode, payload, **kw))

    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("EOF inside a frame (%d of %d bytes)" % (len(self.buf), n))
            self.buf += chunk

    def recv_frame(self, timeout=None):
        """The next frame from the server; EOFError at EOF."""
        self.sock.settimeout(timeout or self.timeout)
        self._fill(2)
        b0, b1 = self.buf[0], self.buf[1]
        if b1 & 0x80:
            raise AssertionError("the server masked a frame")
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._fill(4)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._fill(10)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._fill(off + n)
        head, payload, self.buf = self.buf[:off], self.buf[off:off + n], self.buf[off + n:]
        f = Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, payload, head)
        if f.rsv:
            raise AssertionError("the server set RSV bits: %r" % f)
        return f

    def recv_message(self, timeout=None):
        """The next data message (opcode, payload), pings answered on the way."""
        parts, op = [], None
        while True:
            f = self.recv_frame(timeout)
            if f.opcode == OP_PING:
                self.send_frame(OP_PONG, f.payload)
                continue
            if f.opcode == OP_PONG:
                continue
            if f.opcode == OP_CLOSE:
                raise AssertionError("close frame %r while a message was expected" % f.code)
            if op is None:
                op = f.opcode
            parts.append(f.payload)
            if f.fin:
                return op, b"".join(parts)

    def expect_close(self, code, reason=None, timeout=None):
        """Reads frames up to a close frame (data frames must not come); it
        must carry code (and reason text, when given); then the server must
        end the TCP connection without anything more from this side. Returns
        the close frame."""
        while True:
            try:
                f = self.recv_frame(timeout)
            except EOFError:
                raise AssertionError("EOF without a close frame (expected %d)" % code)
            except ConnectionResetError:
                raise AssertionError("connection reset without a close frame (expected %d)" % code)
            if f.opcode in (OP_PING, OP_PONG):
                continue
            if f.opcode != OP_CLOSE:
                raise AssertionError("expected a close frame %d, got %r" % (code, f))
            if f.code != code:
                raise AssertionError("close code %r (%r), expected %d" % (f.code, f.payload, code))
            if reason is not None and f.reason != reason:
                raise AssertionError("close reason %r, expected %r" % (f.reason, reason))
            rest = self.buf + wait_eof(self.sock, timeout or self.timeout)
            if rest:
                raise AssertionError("bytes after the close frame: %r" % rest[:64])
            return f

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---- TLS records by hand -------------------------------------------------

class BioTLS:
    """A TLS client over memory BIOs on a plain socket, for what an
    SSLSocket does not let a test do: seal records without sending them
    (to send part of one, or several in one write), or write raw bytes
    between them. ctx: an ssl.SSLContext (the version it allows is what is
    negotiated)."""

    def __init__(self, port, ctx, timeout=None, rcvbuf=None):
        self.timeout = timeout or T(10)
        self.sock = connect(port, self.timeout, rcvbuf=rcvbuf)
        self.local_port = self.sock.getsockname()[1]
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname="127.0.0.1")
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.out.read())
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError("EOF during the TLS handshake")
                self.inc.write(chunk)
        self.sock.sendall(self.out.read())  # the client's Finished

    def seal(self, data):
        """The records that carry data (not sent)."""
        self.obj.write(data)
        return self.out.read()

    def send(self, data):
        self.sock.sendall(self.seal(data))

    def read(self, n, timeout=None):
        """Up to n bytes of plaintext, reading the socket as needed; b"" at
        the server's close_notify. Raises EOFError at a bare EOF and
        ssl.SSLError for an alert."""
        self.sock.settimeout(timeout or self.timeout)
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError("EOF without close_notify")
                self.inc.write(chunk)
            except ssl.SSLZeroReturnError:
                return b""

    # What RawWS and read_http use of a socket; b"" at close_notify or EOF.
    def sendall(self, data):
        self.send(data)

    def recv(self, n):
        try:
            return self.read(n)
        except EOFError:
            return b""

    def settimeout(self, t):
        self.timeout = t

    def read_exact(self, n, timeout=None):
        data = b""
        while len(data) < n:
            chunk = self.read(n - len(data), timeout)
            if not chunk:
                raise EOFError("close_notify after %d of %d bytes" % (len(data), n))
            data += chunk
        return data

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def tls_records(data):
    """Splits bytes on the wire into TLS records: [(type, body)]; fails
    on a partial record."""
    out = []
    while data:
        if len(data) < 5:
            raise AssertionError("a partial record header: %r" % data)
        n = struct.unpack("!H", data[3:5])[0]
        if len(data) < 5 + n:
            raise AssertionError("a partial record: %d of %d bytes" % (len(data) - 5, n))
        out.append((data[0], data[5:5 + n]))
        data = data[5 + n:]
    return out


# ---- the stall plugin (tests/plugins/stall.c) ----------------------------

ST_GREET, ST_ECHO, ST_PUSH, ST_SEND, ST_BROADCAST, ST_BIG, ST_STALL = 1, 2, 95, 96, 97, 98, 99


def stall_pkt(pid, n=None):
    """A packet for the stall plugin, with a u32 argument when n is given."""
    return pkt(pid, b"" if n is None else struct.pack("<I", n))


def pattern(n):
    """The bytes the stall plugin sends: byte i is i % 251."""
    block = bytes(range(251))
    return (block * (n // 251 + 1))[:n]


# ---- chat packets --------------------------------------------------------

C_JOIN, C_CHAT, S_CHAT, S_SYSTEM = 1, 2, 101, 102


def pkt(pid, body):
    return struct.pack("<HH", len(body) + 4, pid) + body


def unpkt(data):
    """One whole packet's (id, body); the size field must be its length."""
    size, pid = struct.unpack("<HH", data[:4])
    if size != len(data):
        raise AssertionError("packet size field %d, length %d" % (size, len(data)))
    return pid, data[4:]


def chat_body(sid, text):
    return struct.pack("<Q", sid) + text


def joined_sid(body, room):
    m = re.fullmatch(rb"(\d+) joined " + re.escape(room), body)
    if not m:
        raise AssertionError("not a join notice for %r: %r" % (room, body))
    return int(m.group(1))


class TcpChat:
    """A chat client on a plain (or TLS) stream socket."""

    def __init__(self, port, ctx=None):
        self.sock = connect(port)
        if ctx:
            self.sock = ctx.wrap_socket(self.sock, server_hostname="127.0.0.1")

    def send(self, pid, body):
        self.sock.sendall(pkt(pid, body))

    def recv(self):
        head = recv_exact(self.sock, 4)
        size, pid = struct.unpack("<HH", head)
        return pid, recv_exact(self.sock, size - 4)

    def join(self, room):
        self.send(C_JOIN, room)
        pid, body = self.recv()
        assert pid == S_SYSTEM, (pid, body)
        return joined_sid(body, room)

    def close(self):
        self.sock.close()


# ---- test cases ----------------------------------------------------------

class PierdCase(unittest.TestCase):
    """One pierd for the whole class: LISTENERS, PLUGINS, LIMITS and TOP go
    into its server.json; prepare(tmp) writes what they refer to (static
    files, certificates) first. self.d is the running Pierd."""
    LISTENERS = []
    PLUGINS = ("chat", "rec")
    LIMITS = None
    TOP = None

    @classmethod
    def prepare(cls, tmp):
        pass

    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        try:
            cls.prepare(cls.tmp)
            cls.d = Pierd(cls.LISTENERS, plugins=cls.PLUGINS, limits=cls.LIMITS, top=cls.TOP,
                          tmp=cls.tmp)
            cls.d.start()
        except BaseException:
            d = getattr(cls, "d", None)
            if d:
                d.kill()
            cls.tmp.close()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.d.stop()
        finally:
            cls.tmp.close()


def run(coro, timeout=None):
    """Runs a coroutine to its end, failing past timeout (default 30 s, scaled)."""
    import asyncio
    return asyncio.run(asyncio.wait_for(coro, timeout or T(30)))
