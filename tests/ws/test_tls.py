"""TLS listeners: the chat plugin over TLS (openssl s_client, Python's ssl)
and over wss:// (websockets), sharing a room with plain TCP; what a client
that does not speak TLS 1.2+ gets; the handshake deadline; a certificate
rotated by SIGHUP while sessions stay; a bad certificate in --check."""
import asyncio
import os
import re
import signal
import socket
import ssl
import shutil
import subprocess
import threading
import time
import unittest
import warnings

import websockets

from pierws import (BACKEND, C_CHAT, C_JOIN, OP_BINARY, PEER_CLOSED, S_CHAT, S_SYSTEM,
                    SANITIZER_RX, TLS_ERROR, Pierd, PierdCase, RawWS, TcpChat, TempDir, T,
                    cert_subject, chat_body, client_context, connect, joined_sid, make_cert,
                    pierd_path, pkt, run, run_check, unpkt, wait_eof)


class SClient:
    """openssl s_client -quiet: bytes in through stdin, out through stdout."""

    def __init__(self, port, *args):
        self.p = subprocess.Popen(
            ["openssl", "s_client", "-quiet", "-connect", "127.0.0.1:%d" % port] + list(args),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buf = b""

    def write(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def read_exact(self, n, timeout=None):
        import select
        end = time.monotonic() + (timeout or T(10))
        fd = self.p.stdout.fileno()
        while len(self.buf) < n:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError("s_client: %d of %d bytes, then nothing" % (len(self.buf), n))
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError("s_client ended after %r; stderr: %s" %
                                         (self.buf, self.stderr()))
                self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        head = self.read_exact(4)
        size = int.from_bytes(head[:2], "little")
        return unpkt(head + self.read_exact(size - 4))

    def send(self, pid, body):
        self.write(pkt(pid, body))

    def stderr(self):
        self.close()
        return self.p.stderr.read().decode(errors="replace")

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        for f in (self.p.stdin, self.p.stdout):
            try:
                f.close()
            except OSError:
                pass

    def finish(self):
        self.close()
        self.p.stderr.close()


def s_client_run(port, *args, stdin=b""):
    """s_client to completion (stdin then EOF): (status, stdout+stderr)."""
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port] + list(args),
                       input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=T(20))
    return r.returncode, r.stdout.decode(errors="replace")


def server_cert_subject(port, cafile=None):
    """The subject of the certificate the server at port presents."""
    code, out = s_client_run(port, "-showcerts")
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    if not m:
        raise AssertionError("no certificate from s_client: %s" % out)
    return cert_subject(m.group(0))


async def wss_connect(port, ctx, path="/chat"):
    return await websockets.connect("wss://127.0.0.1:%d%s" % (port, path), ssl=ctx,
                                    ping_interval=None, open_timeout=T(10), close_timeout=T(5))


async def ws_pkt(ws):
    return unpkt(await asyncio.wait_for(ws.recv(), T(10)))


TLS_FILES = {"cert": "cert.pem", "key": "key.pem"}  # relative to server.json's directory


def tls_listeners():
    return [
        {"plugin": "chat", "framing": "u16_size_id", "tls": TLS_FILES, "handshake_timeout_ms": 1000},
        {"plugin": "chat", "framing": "u16_size_id", "transport": "websocket", "path": "/chat",
         "tls": TLS_FILES, "handshake_timeout_ms": 1000},
        {"plugin": "chat", "framing": "u16_size_id"},
    ]


class Tls(PierdCase):
    LISTENERS = tls_listeners() + [
        {"plugin": "rec", "framing": "raw", "tls": TLS_FILES},
        {"plugin": "rec", "framing": "raw", "transport": "websocket", "tls": TLS_FILES},
    ]

    @classmethod
    def prepare(cls, tmp):
        make_cert(tmp.join("cert.pem"), tmp.join("key.pem"), "pier-test-1")
        cls.ca = tmp.join("cert.pem")

    @property
    def tls_port(self):
        return self.d.ports[0]

    @property
    def wss_port(self):
        return self.d.ports[1]

    @property
    def tcp_port(self):
        return self.d.ports[2]

    def test_s_client_chat(self):
        sc = SClient(self.tls_port, "-CAfile", self.ca, "-verify_return_error",
                     "-verify_ip", "127.0.0.1")
        try:
            sc.send(C_JOIN, b"s_client")
            pid, body = sc.recv()
            self.assertEqual(pid, S_SYSTEM)
            sid = joined_sid(body, b"s_client")
            sc.send(C_CHAT, b"over TLS")
            self.assertEqual(sc.recv(), (S_CHAT, chat_body(sid, b"over TLS")))
            sc.send(C_CHAT, b"x" * 512)
            self.assertEqual(sc.recv(), (S_CHAT, chat_body(sid, b"x" * 512)))
        finally:
            sc.finish()

    def test_tls_wss_tcp_share_a_room(self):
        async def go():
            ctx = client_context(self.ca)
            sc = SClient(self.tls_port, "-CAfile", self.ca, "-verify_return_error")
            py = TcpChat(self.tls_port, ctx)
            tcp = TcpChat(self.tcp_port)
            w = await wss_connect(self.wss_port, ctx)
            try:
                self.assertEqual(py.sock.version() in ("TLSv1.2", "TLSv1.3"), True)
                sc.send(C_JOIN, b"mixed")
                s_sc = joined_sid(sc.recv()[1], b"mixed")
                s_py = py.join(b"mixed")
                self.assertEqual(sc.recv(), (S_SYSTEM, b"%d joined mixed" % s_py))
                s_tcp = tcp.join(b"mixed")
                for c in (sc, py):
                    self.assertEqual(c.recv(), (S_SYSTEM, b"%d joined mixed" % s_tcp))
                await w.send(pkt(C_JOIN, b"mixed"))
                pid, body = await ws_pkt(w)
                s_w = joined_sid(body, b"mixed")
                for c in (sc, py, tcp):
                    self.assertEqual(c.recv(), (S_SYSTEM, b"%d joined mixed" % s_w))

                def everyone_gets(sid, text):
                    want = (S_CHAT, chat_body(sid, text))
                    for c in (sc, py, tcp):
                        self.assertEqual(c.recv(), want)
                    return want
                sc.send(C_CHAT, b"from s_client")
                want = everyone_gets(s_sc, b"from s_client")
                self.assertEqual(await ws_pkt(w), want)
                py.send(C_CHAT, "from python \u00e9".encode())
                want = everyone_gets(s_py, "from python \u00e9".encode())
                self.assertEqual(await ws_pkt(w), want)
                await w.send(pkt(C_CHAT, b"from wss"))
                want = everyone_gets(s_w, b"from wss")
                self.assertEqual(await ws_pkt(w), want)
                tcp.send(C_CHAT, b"from tcp")
                want = everyone_gets(s_tcp, b"from tcp")
                self.assertEqual(await ws_pkt(w), want)
            finally:
                await w.close()
                py.close()
                tcp.close()
                sc.finish()
        run(go())

    def test_plain_client_on_tls_port(self):
        for port, data, error in (
                (self.tls_port, pkt(C_JOIN, b"plain"), "wrong version number"),
                (self.wss_port, b"GET /chat HTTP/1.1\r\nHost: x\r\n\r\n", "http request"),
                (self.tls_port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "http request")):
            with self.subTest(port=port, error=error):
                mark = self.d.mark()
                s = connect(port)
                local = s.getsockname()[1]
                try:
                    s.sendall(data)
                    got = wait_eof(s)
                finally:
                    s.close()
                self.assertNotIn(b"joined", got)
                self.assertNotIn(b"HTTP/1.1", got)
                if got:  # at most a TLS alert record
                    self.assertEqual(got[0], 0x15, got)
                self.d.wait_log(r"127\.0\.0\.1:%d: TLS handshake failed: %s; closing$" %
                                (local, error), since=mark)

    def test_tls11_refused(self):
        mark = self.d.mark()
        code, out = s_client_run(self.tls_port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
        self.assertNotEqual(code, 0, out)
        self.assertIn("alert protocol version", out)
        self.d.wait_log(r"TLS handshake failed: unsupported protocol; closing$", since=mark)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_ciphers("DEFAULT@SECLEVEL=0")
        with warnings.catch_warnings():  # deprecated: which is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        s = connect(self.tls_port)
        try:
            with self.assertRaises(ssl.SSLError):
                ctx.wrap_socket(s, server_hostname="127.0.0.1")
        finally:
            s.close()

    def test_tls12_and_13_accepted(self):
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            with self.subTest(version=version):
                ctx = client_context(self.ca)
                ctx.minimum_version = ctx.maximum_version = version
                c = TcpChat(self.tls_port, ctx)
                try:
                    self.assertEqual(c.sock.version(), version.name.replace("v1_", "v1."))
                    c.join(b"v")
                finally:
                    c.close()

    def test_handshake_timeout_silent(self):
        for port in (self.tls_port, self.wss_port):
            with self.subTest(port=port):
                mark = self.d.mark()
                start = time.monotonic()
                s = connect(port)
                local = s.getsockname()[1]
                try:
                    got = wait_eof(s, T(10))
                finally:
                    s.close()
                took = time.monotonic() - start
                self.assertEqual(got, b"")
                self.assertGreaterEqual(took, 0.9)
                self.assertLess(took, T(4))
                self.d.wait_log(r"127\.0\.0\.1:%d: handshake not completed within 1000 ms "
                                r"\(handshake_timeout_ms\); closing" % local, since=mark)

    def test_handshake_timeout_partial_client_hello(self):
        # A ClientHello's first bytes, then nothing.
        start = time.monotonic()
        s = connect(self.tls_port)
        try:
            s.sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))
            got = wait_eof(s, T(10))
        finally:
            s.close()
        took = time.monotonic() - start
        self.assertEqual(got, b"")
        self.assertGreaterEqual(took, 0.9)
        self.assertLess(took, T(4))

    def test_handshake_timeout_after_tls(self):
        # TLS done, then no HTTP request: the same deadline.
        start = time.monotonic()
        s = client_context(self.ca).wrap_socket(connect(self.wss_port),
                                                server_hostname="127.0.0.1")
        try:
            self.assertEqual(wait_eof(s, T(10)), b"")
        finally:
            s.close()
        took = time.monotonic() - start
        self.assertGreaterEqual(took, 0.9)
        self.assertLess(took, T(4))

    def test_https_static_refused_path(self):
        # Over TLS the WebSocket listener answers HTTP like the plain one.
        ctx = client_context(self.ca)
        s = ctx.wrap_socket(connect(self.wss_port), server_hostname="127.0.0.1")
        try:
            s.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
            got = wait_eof(s)
        finally:
            s.close()
        self.assertTrue(got.startswith(b"HTTP/1.1 404 "), got[:80])

    def tls_rec(self, **kw):
        s = connect(self.d.ports[3])
        local = s.getsockname()[1]
        ss = client_context(self.ca).wrap_socket(s, server_hostname="127.0.0.1", **kw)
        sid = self.d.rec_sid(local)
        return ss, local, sid

    def test_tls_error_after_handshake(self):
        # A record that does not decrypt, in the middle of a session the
        # plugin has seen: it hears "TLS error".
        mark = self.d.mark()
        ss, local, sid = self.tls_rec()
        try:
            ss.sendall(b"echo me")
            self.assertEqual(ss.recv(100), b"echo me")
            raw = socket.socket(fileno=os.dup(ss.fileno()))
            raw.sendall(b"\x17\x03\x03\x00\x20" + os.urandom(32))
            raw.close()
            with self.assertRaises((ssl.SSLError, ConnectionResetError)):
                while ss.recv(100):
                    pass
                raise ssl.SSLError("EOF without an alert")
        finally:
            ss.close()
        self.assertEqual(self.d.rec_reason(sid), TLS_ERROR)
        self.d.wait_log(r"session %s 127\.0\.0\.1:%d: TLS error: .+; closing$" % (sid, local),
                        since=mark)

    def test_close_notify_from_client(self):
        ss, local, sid = self.tls_rec()
        try:
            ss.sendall(b"x")
            self.assertEqual(ss.recv(10), b"x")
            ss.unwrap()  # close_notify, and the server's in answer
        finally:
            ss.close()
        self.assertEqual(self.d.rec_reason(sid), PEER_CLOSED)

    def test_close_notify_from_server(self):
        # chat ends a session after an unknown packet id: the notice, then
        # close_notify (not a bare TCP close: that would raise here).
        s = connect(self.tls_port)
        ss = client_context(self.ca).wrap_socket(s, server_hostname="127.0.0.1",
                                                 suppress_ragged_eofs=False)
        try:
            ss.sendall(pkt(7, b"?"))
            want = pkt(S_SYSTEM, b"unknown packet id 7")
            got = b""
            while len(got) < len(want):
                chunk = ss.recv(100)
                self.assertTrue(chunk, got)
                got += chunk
            self.assertEqual(got, want)
            self.assertEqual(ss.recv(100), b"")  # close_notify
        finally:
            ss.close()

    def test_wss_raw_listener(self):
        async def go():
            w = await wss_connect(self.d.ports[4], client_context(self.ca), "/")
            try:
                sid = self.d.rec_sid(w.local_address[1])
                await w.send(b"over wss")
                self.assertEqual(await asyncio.wait_for(w.recv(), T(10)), b"over wss")
            finally:
                await w.close()
            self.assertEqual(w.close_code, 1000)
            return sid
        sid = run(go())
        self.assertEqual(self.d.rec_reason(sid), PEER_CLOSED)


class Rotation(unittest.TestCase):
    def test_sighup_rotates_certificate(self):
        tmp = TempDir()
        d = None
        try:
            make_cert(tmp.join("cert.pem"), tmp.join("key.pem"), "pier-test-1")
            make_cert(tmp.join("cert2.pem"), tmp.join("key2.pem"), "pier-test-2")
            ca1, ca2 = tmp.join("ca1.pem"), tmp.join("ca2.pem")
            with open(tmp.join("cert.pem")) as f, open(ca1, "w") as g:
                g.write(f.read())
            with open(tmp.join("cert2.pem")) as f, open(ca2, "w") as g:
                g.write(f.read())
            d = Pierd(tls_listeners(), plugins=("chat",), tmp=tmp).start()
            tls_port, wss_port, tcp_port = d.ports
            self.assertEqual(server_cert_subject(tls_port), "subject=CN = pier-test-1")

            async def go():
                w = await wss_connect(wss_port, client_context(ca1))
                tcp = TcpChat(tcp_port)
                old_tls = TcpChat(tls_port, client_context(ca1))
                try:
                    await w.send(pkt(C_JOIN, b"rot"))
                    s_w = joined_sid((await ws_pkt(w))[1], b"rot")
                    s_tcp = tcp.join(b"rot")
                    self.assertEqual(await ws_pkt(w), (S_SYSTEM, b"%d joined rot" % s_tcp))
                    s_old = old_tls.join(b"rot")
                    self.assertEqual(await ws_pkt(w), (S_SYSTEM, b"%d joined rot" % s_old))
                    self.assertEqual(tcp.recv(), (S_SYSTEM, b"%d joined rot" % s_old))

                    # Overwrite both files in place, then SIGHUP.
                    for src, dst in (("cert2.pem", "cert.pem"), ("key2.pem", "key.pem")):
                        with open(tmp.join(src), "rb") as f, open(tmp.join(dst), "wb") as g:
                            g.write(f.read())
                    mark = d.mark()
                    d.signal(signal.SIGHUP)
                    d.wait_log(r"SIGHUP: configuration .* re-read", since=mark)
                    self.assertIsNone(d.find_log(r" (error|warn) ", since=mark))
                    for i in (0, 1):
                        d.wait_log(r"SIGHUP: listeners\[%d\] 127\.0\.0\.1:0: certificate %s and key "
                                   r"%s re-read$" % (i, re.escape(tmp.join("cert.pem")),
                                                     re.escape(tmp.join("key.pem"))), since=mark)

                    self.assertEqual(server_cert_subject(tls_port), "subject=CN = pier-test-2")
                    self.assertEqual(server_cert_subject(wss_port), "subject=CN = pier-test-2")
                    # New sessions: trusted with the new certificate only.
                    fresh = TcpChat(tls_port, client_context(ca2))
                    fresh.close()
                    with self.assertRaises(ssl.SSLCertVerificationError):
                        TcpChat(tls_port, client_context(ca1))
                    # The sessions made before carry on.
                    await w.send(pkt(C_CHAT, b"after rotation"))
                    want = (S_CHAT, chat_body(s_w, b"after rotation"))
                    self.assertEqual(await ws_pkt(w), want)
                    self.assertEqual(tcp.recv(), want)
                    self.assertEqual(old_tls.recv(), want)
                    old_tls.send(C_CHAT, b"old tls too")
                    want = (S_CHAT, chat_body(s_old, b"old tls too"))
                    self.assertEqual(await ws_pkt(w), want)
                    self.assertEqual(old_tls.recv(), want)
                    self.assertEqual(tcp.recv(), want)

                    # A broken certificate on the next SIGHUP: logged, naming
                    # the file, and the one in use stays.
                    with open(tmp.join("cert.pem"), "w") as g:
                        g.write("not a certificate\n")
                    mark = d.mark()
                    d.signal(signal.SIGHUP)
                    for i in (0, 1):
                        d.wait_log(r" error SIGHUP: %s: listeners\[%d\]\.tls: cannot load certificate "
                                   r'"%s": no start line$' % (re.escape(d.config_path), i,
                                                              re.escape(tmp.join("cert.pem"))),
                                   since=mark)
                    d.wait_log(r"SIGHUP: configuration .* is invalid; keeping the running "
                               r"configuration", since=mark)
                    self.assertEqual(server_cert_subject(tls_port), "subject=CN = pier-test-2")
                    await w.send(pkt(C_CHAT, b"still"))
                    self.assertEqual(await ws_pkt(w), (S_CHAT, chat_body(s_w, b"still")))
                finally:
                    await w.close()
                    tcp.close()
                    old_tls.close()
            run(go())
        finally:
            if d:
                d.stop()
            tmp.close()

    def test_sighup_with_a_changed_listener_rotates_nothing(self):
        # One listener changed (needs a restart), another's TLS files
        # changed in the same new "listeners": nothing of it applies, the
        # old certificate is still served.
        tmp = TempDir()
        d = None
        try:
            make_cert(tmp.join("cert.pem"), tmp.join("key.pem"), "pier-test-1")
            make_cert(tmp.join("cert2.pem"), tmp.join("key2.pem"), "pier-test-2")
            d = Pierd([{"plugin": "chat", "framing": "u16_size_id"},
                       {"plugin": "chat", "framing": "u16_size_id", "tls": TLS_FILES}],
                      plugins=("chat",), tmp=tmp).start()
            tls_port = d.ports[1]
            self.assertEqual(server_cert_subject(tls_port), "subject=CN = pier-test-1")
            d.config["listeners"][0]["framing"] = "raw"
            d.config["listeners"][1]["tls"] = {"cert": "cert2.pem", "key": "key2.pem"}
            d.write_config()
            mark = d.mark()
            d.signal(signal.SIGHUP)
            d.wait_log(r"SIGHUP: configuration .* re-read", since=mark)
            self.assertIsNotNone(d.find_log(r" warn  SIGHUP: listeners changed: needs a restart; "
                                            r"not applied$", since=mark), d.log_text())
            self.assertIsNone(d.find_log(r"certificate .* re-read", since=mark), d.log_text())
            self.assertEqual(server_cert_subject(tls_port), "subject=CN = pier-test-1")
            c = TcpChat(tls_port, client_context(tmp.join("cert.pem")))
            try:
                c.join(b"still the old certificate")
            finally:
                c.close()
        finally:
            if d:
                d.stop()
            tmp.close()


class RotationUnderLoad(unittest.TestCase):
    def test_broadcasts_while_certificates_rotate(self):
        # Chat on two workers: TCP, TLS, ws:// and wss:// members of one
        # room chatting (broadcasts shared across workers and transports)
        # and reconnecting, while SIGHUP rotates the certificate ten times a
        # second (the thread sanitizer's build runs this too).
        tmp = TempDir()
        d = None
        try:
            for name, cn in (("a", "pier-a"), ("b", "pier-b")):
                make_cert(tmp.join("cert-%s.pem" % name), tmp.join("key-%s.pem" % name), cn)
            shutil.copy(tmp.join("cert-a.pem"), tmp.join("cert.pem"))
            shutil.copy(tmp.join("key-a.pem"), tmp.join("key.pem"))
            d = Pierd(tls_listeners() + [
                {"plugin": "chat", "framing": "u16_size_id", "transport": "websocket",
                 "path": "/chat"}], plugins=("chat",), tmp=tmp).start()
            tls_port, wss_port, tcp_port, ws_port = d.ports
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # either certificate
            stop = time.monotonic() + 2.0
            errors, rounds = [], [0]

            def member(kind):
                try:
                    while time.monotonic() < stop:
                        if kind in ("tcp", "tls"):
                            c = TcpChat(tcp_port if kind == "tcp" else tls_port,
                                        ctx if kind == "tls" else None)
                            sock, send = c.sock, c.send
                        else:
                            c = RawWS(ws_port if kind == "ws" else wss_port, "/chat",
                                      ctx=ctx if kind == "wss" else None)
                            sock = c.sock
                            send = lambda pid, body, c=c: c.send_frame(OP_BINARY, pkt(pid, body))
                        try:
                            send(C_JOIN, b"load")
                            sock.settimeout(0.02)
                            for i in range(30):
                                send(C_CHAT, b"%s %d" % (kind.encode(), i))
                                try:
                                    sock.recv(65536)
                                except (socket.timeout, ssl.SSLWantReadError):
                                    pass
                        finally:
                            c.close()
                        rounds[0] += 1
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append("%s: %r" % (kind, e))

            threads = [threading.Thread(target=member, args=(k,), daemon=True)
                       for k in ("tcp", "tls", "ws", "wss") * 2]
            for t in threads:
                t.start()
            mark = d.mark()
            n = 0
            while time.monotonic() < stop:
                name = "ab"[n % 2]
                for part in ("cert", "key"):
                    shutil.copy(tmp.join("%s-%s.pem" % (part, name)), tmp.join(part + ".pem.new"))
                os.rename(tmp.join("key.pem.new"), tmp.join("key.pem"))
                os.rename(tmp.join("cert.pem.new"), tmp.join("cert.pem"))
                d.signal(signal.SIGHUP)
                n += 1
                time.sleep(0.1)
            for t in threads:
                t.join(T(20))
            self.assertEqual(errors, [])
            self.assertGreater(rounds[0], 8)
            d.wait_log(r"SIGHUP: listeners\[1\] 127\.0\.0\.1:0: certificate .* re-read$",
                       since=mark)
            d.assert_alive()
        finally:
            if d:
                d.stop()
            tmp.close()


class ListenFailure(unittest.TestCase):
    def test_port_taken_after_tls_listeners(self):
        # A listener that cannot bind, after TLS and WebSocket listeners
        # were made: pierd says so and exits 1, releasing what it made (the
        # sanitizer builds check for leaks at exit).
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        tmp = TempDir()
        try:
            make_cert(tmp.join("cert.pem"), tmp.join("key.pem"), "pier-listen")
            tmp.write("web/index.html", "x")
            first = {"plugin": "chat", "framing": "u16_size_id", "transport": "websocket",
                     "tls": TLS_FILES, "origins": ["http://a"]}
            for second in ({"plugin": "chat", "framing": "u16_size_id", "tls": TLS_FILES,
                            "port": port},
                           {"plugin": "chat", "framing": "u16_size_id", "transport": "websocket",
                            "path": "/x", "origins": ["http://a"], "static": "web",
                            "port": port}):
                with self.subTest(second=second.get("transport", "tcp")):
                    d = Pierd([first, second], plugins=("chat",), tmp=tmp)
                    r = subprocess.run([pierd_path(), "--config", d.config_path,
                                        "--io-backend", BACKEND],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, timeout=T(30))
                    out = r.stdout.decode(errors="replace")
                    self.assertEqual(r.returncode, 1, out)
                    self.assertIsNone(SANITIZER_RX.search(out), out)
                    self.assertIn("error listeners[1] 127.0.0.1:%d (plugin \"chat\"): Address "
                                  "already in use" % port, out)
                    self.assertIn("error pierd: not started: Address already in use", out)
        finally:
            busy.close()
            tmp.close()


class CheckBadCert(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        make_cert(self.tmp.join("cert.pem"), self.tmp.join("key.pem"), "good")
        make_cert(self.tmp.join("other.pem"), self.tmp.join("otherkey.pem"), "other")
        self.tmp.write("garbage.pem", "-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                                      "-----END CERTIFICATE-----\n")
        self.tmp.write("text.pem", "hello\n")

    def tearDown(self):
        self.tmp.close()

    def check(self, cert, key, transport="tcp"):
        d = Pierd([{"plugin": "chat", "framing": "u16_size_id", "transport": transport,
                    "tls": {"cert": cert, "key": key}}], plugins=("chat",), tmp=self.tmp)
        return run_check(d.config_path)

    def test_good_files_pass(self):
        code, out = self.check("cert.pem", "key.pem")
        self.assertEqual(code, 0, out)

    def assert_error(self, cert, key, line, transport="tcp"):
        """--check fails with exactly this error line (after the log's
        timestamp and level), paths as pier resolved them."""
        code, out = self.check(cert, key, transport)
        self.assertEqual(code, 1, out)
        want = "%s: listeners[0].tls: %s" % (self.tmp.join("server.json"),
                                              line.replace("@", self.tmp.path + "/"))
        errors = [l.split(" error ", 1)[1] for l in out.splitlines() if " error " in l]
        self.assertEqual(errors, [want], out)
        self.assertIn("configuration %s is invalid" % self.tmp.join("server.json"), out)

    def test_garbage_cert(self):
        for transport in ("tcp", "websocket"):
            with self.subTest(transport=transport):
                self.assert_error("garbage.pem", "key.pem",
                                  'cannot load certificate "@garbage.pem": bad base64 decode',
                                  transport)

    def test_not_pem(self):
        self.assert_error("text.pem", "key.pem", 'cannot load certificate "@text.pem": no start line')

    def test_missing_cert(self):
        self.assert_error("absent.pem", "key.pem",
                          'cannot open certificate "@absent.pem": No such file or directory')

    def test_missing_key(self):
        self.assert_error("cert.pem", "nokey.pem",
                          'cannot open key "@nokey.pem": No such file or directory')

    def test_key_not_a_key(self):
        self.assert_error("cert.pem", "text.pem", 'cannot load key "@text.pem": no start line')

    def test_key_of_another_cert(self):
        self.assert_error("cert.pem", "otherkey.pem",
                          'key "@otherkey.pem" does not match certificate "@cert.pem"')

    def test_absolute_paths(self):
        self.assert_error(self.tmp.join("cert.pem"), self.tmp.join("otherkey.pem"),
                          'key "@otherkey.pem" does not match certificate "@cert.pem"')


if __name__ == "__main__":
    unittest.main()
