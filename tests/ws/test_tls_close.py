"""How TLS sessions end, and what TLS costs a client that stops reading:
a TLS error closes at once (the alert, then EOF, not the close deadline);
the client's close_notify is answered with close_notify alone (no
WebSocket close frame after it); a server-side close (a kick, shutdown)
sends everything queued, then close_notify, then FIN; a TLS record left
unfinished is cut by packet_timeout_ms; the plaintext waiting to be sealed
counts toward max_send_queue with what is sealed; floods of what TLS or
WebSocket answer (pongs, KeyUpdates) stop once the client does not read."""
import ctypes
import os
import signal
import socket
import ssl
import sys
import time
import unittest

from pierws import (KICKED, OP_BINARY, OP_CLOSE, OP_PING, PACKET_TIMEOUT, PEER_CLOSED,
                    REASONS, SCALE, SEND_QUEUE_FULL, SEND_TIMEOUT, SHUTDOWN, ST_ECHO, ST_PUSH,
                    ST_SEND, TLS_ERROR, BioTLS, Pierd, PierdCase, RawWS, T, TempDir,
                    client_context, connect, frame, make_cert, pattern, pkt, recv_exact,
                    stall_pkt, tls_records, unpkt)

TLS_FILES = {"cert": "cert.pem", "key": "key.pem"}
VERSIONS = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
SANITIZED = SCALE > 1
ENOBUFS, ENOTCONN = 105, 107


def context(ca, version=None):
    ctx = client_context(ca)
    if version:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def raw_dup(ss):
    """A plain socket on the same connection as the SSLSocket ss (bytes
    written or read through it bypass TLS)."""
    return socket.socket(fileno=os.dup(ss.fileno()))


def read_raw_until_eof(sock, timeout):
    """(bytes, "eof" | "reset") from a plain socket, failing past timeout."""
    sock.settimeout(timeout)
    got = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return got, "reset"
        if not chunk:
            return got, "eof"
        got += chunk


def assert_fin(test, ss):
    """After close_notify came through ss: the TCP connection ends with a
    FIN (not a reset) and nothing more."""
    raw = raw_dup(ss)
    try:
        got, how = read_raw_until_eof(raw, T(10))
    finally:
        raw.close()
    test.assertEqual((got, how), (b"", "eof"))


def recv_all(ss, n, timeout=None):
    """Exactly n bytes from the SSLSocket ss."""
    ss.settimeout(timeout or T(20))
    data = bytearray()
    while len(data) < n:
        chunk = ss.recv(min(65536, n - len(data)))
        if not chunk:
            raise EOFError("close_notify after %d of %d bytes" % (len(data), n))
        data += chunk
    return bytes(data)


class TlsClose(PierdCase):
    LISTENERS = [
        {"plugin": "rec", "framing": "u16_size_id", "tls": TLS_FILES},
        {"plugin": "rec", "framing": "u16_size_id", "transport": "websocket", "tls": TLS_FILES,
         "ping_interval_ms": 0},
        {"plugin": "stall", "framing": "u16_size_id", "tls": TLS_FILES},
        {"plugin": "stall", "framing": "u16_size_id", "transport": "websocket", "tls": TLS_FILES,
         "ping_interval_ms": 0},
    ]
    PLUGINS = ("rec", "stall")
    LIMITS = {"packet_timeout_ms": 400}

    @classmethod
    def prepare(cls, tmp):
        make_cert(tmp.join("cert.pem"), tmp.join("key.pem"), "pier-tls-close")
        cls.ca = tmp.join("cert.pem")

    # -- a TLS error --

    def test_tls_error_closes_at_once(self):
        # A record that does not decrypt, on an open session: the alert,
        # then EOF at once -- not after the 5 s close deadline, waiting for
        # a WebSocket close frame that could never be sealed.
        for kind, port in (("tls", self.d.ports[0]), ("wss", self.d.ports[1])):
            for version in VERSIONS:
                with self.subTest(kind=kind, version=version.name):
                    mark = self.d.mark()
                    s = connect(port)
                    local = s.getsockname()[1]
                    ss = context(self.ca, version).wrap_socket(s, server_hostname="127.0.0.1")
                    raw = raw_dup(ss)
                    try:
                        if kind == "wss":  # the plugin meets the session after the 101
                            ws = RawWS(port, sock=ss)
                        sid = self.d.rec_sid(local)
                        if kind == "wss":
                            ws.send_frame(OP_BINARY, pkt(1, b"hello"))
                            self.assertEqual(ws.recv_message(), (OP_BINARY, pkt(1, b"hello")))
                        else:
                            ss.sendall(pkt(1, b"hello"))
                            self.assertEqual(recv_exact(ss, 9), pkt(1, b"hello"))
                        start = time.monotonic()
                        raw.sendall(b"\x17\x03\x03\x00\x20" + os.urandom(32))
                        got, how = read_raw_until_eof(raw, T(10))
                        took = time.monotonic() - start
                    finally:
                        raw.close()
                        ss.close()
                    records = tls_records(got)
                    self.assertEqual(len(records), 1, records)  # the alert, and nothing after
                    self.assertIn(records[0][0], (0x15, 0x17), records)
                    self.assertEqual(how, "eof")
                    self.assertLess(took, 3.0)  # the close deadline is 5 s
                    self.assertEqual(self.d.rec_reason(sid), TLS_ERROR)
                    self.d.wait_log(r"session %s 127\.0\.0\.1:%d: TLS error: .+; closing$" %
                                    (sid, local), since=mark)

    # -- close_notify from the client --

    def test_close_notify_answered_without_close_frame(self):
        # RFC 5246 7.2.1 / RFC 8446 6.1: close_notify is answered with
        # close_notify, and nothing is sent after it (OpenSSL clients fail
        # their shutdown on "application data after close notify").
        for version in VERSIONS:
            with self.subTest(version=version.name):
                s = connect(self.d.ports[1])
                local = s.getsockname()[1]
                ss = context(self.ca, version).wrap_socket(s, server_hostname="127.0.0.1",
                                                           suppress_ragged_eofs=False)
                try:
                    ws = RawWS(self.d.ports[1], sock=ss)
                    sid = self.d.rec_sid(local)
                    ws.send_frame(OP_BINARY, pkt(1, b"before"))
                    self.assertEqual(ws.recv_message(), (OP_BINARY, pkt(1, b"before")))
                    plain = ss.unwrap()  # raises if a record came before the close_notify
                    got, how = read_raw_until_eof(plain, T(10))
                    self.assertEqual((got, how), (b"", "eof"))
                finally:
                    ss.close()
                self.assertEqual(self.d.rec_reason(sid), PEER_CLOSED)

    # -- a server-side close --

    def kicked(self, kind):
        """512 KiB queued to a client that is not reading yet, then a
        kick: the client reads it all, then (wss) the close frame, then
        close_notify, then FIN."""
        n = 512 * 1024
        port = self.d.ports[2] if kind == "tls" else self.d.ports[3]
        s = connect(port)
        local = s.getsockname()[1]
        ss = context(self.ca).wrap_socket(s, server_hostname="127.0.0.1",
                                          suppress_ragged_eofs=False)
        try:
            if kind == "wss":
                ws = RawWS(port, sock=ss)
            sid = self.d.rec_sid(local)
            if kind == "wss":
                self.assertEqual(unpkt(ws.recv_message()[1])[0], 1)  # the greeting
                ws.send_frame(OP_BINARY, stall_pkt(ST_SEND, n))
            else:
                self.assertEqual(unpkt(recv_exact(ss, 5))[0], 1)
                ss.sendall(stall_pkt(ST_SEND, n))
            self.d.wait_rec(r"sent %s %d 0" % (sid, n))
            rc, out, err = self.d.pierctl("kick", sid)
            self.assertEqual((rc, out, err), (0, "kicked %s\n" % sid, ""))
            if kind == "wss":
                op, data = ws.recv_message(T(20))
                self.assertEqual((op, len(data)), (OP_BINARY, n))
                self.assertTrue(data == pattern(n), "the message is not what was sent")
                f = ws.recv_frame()
                self.assertEqual((f.opcode, f.code, f.reason),
                                 (OP_CLOSE, 1008, REASONS[KICKED]))
                self.assertEqual(ws.buf, b"")
            else:
                self.assertTrue(recv_all(ss, n) == pattern(n), "the data is not what was sent")
            self.assertEqual(ss.recv(100), b"")  # close_notify (a bare EOF raises here)
            assert_fin(self, ss)
            ss.unwrap()
        finally:
            ss.close()
        self.assertEqual(self.d.rec_reason(sid), KICKED)

    def test_kick_tls_close_notify_after_data(self):
        self.kicked("tls")

    def test_kick_wss_close_notify_after_data(self):
        self.kicked("wss")

    # -- packet_timeout_ms on TLS --

    def held_in_log(self, sid, local, mark):
        m = self.d.wait_log(r"session %s 127\.0\.0\.1:%d: (\d+) of a packet's bytes held for "
                            r"\d+ ms \(packet_timeout_ms\); closing$" % (sid, local), since=mark)
        return int(m.group(1))

    def test_partial_record_timed(self):
        # A whole packet in one record, all of the record but its last byte
        # sent: closed after packet_timeout_ms, with close_notify; the
        # plugin never sees the packet.
        mark = self.d.mark()
        bt = BioTLS(self.d.ports[0], context(self.ca))
        try:
            sid = self.d.rec_sid(bt.local_port)
            rec = bt.seal(pkt(1, b"abcdef"))
            start = time.monotonic()
            bt.sock.sendall(rec[:-1])
            self.assertEqual(bt.read(100, T(5)), b"")  # close_notify
            took = time.monotonic() - start
            self.assertEqual(read_raw_until_eof(bt.sock, T(5)), (b"", "eof"))
        finally:
            bt.close()
        self.assertGreaterEqual(took, 0.35)
        self.assertLess(took, T(3))
        self.assertEqual(self.d.rec_reason(sid), PACKET_TIMEOUT)
        self.assertEqual(self.d.rec_recv_lengths(sid), [])
        held = self.held_in_log(sid, bt.local_port, mark)
        self.assertTrue(0 < held <= len(rec) - 1,
                        "%d bytes held logged; %d of the record were sent" % (held, len(rec) - 1))

    def test_partial_packet_in_whole_record_timed(self):
        # The record is whole, the packet in it is not: the framer's bytes.
        mark = self.d.mark()
        bt = BioTLS(self.d.ports[0], context(self.ca))
        try:
            sid = self.d.rec_sid(bt.local_port)
            bt.send(pkt(1, b"abcdef")[:5])
            self.assertEqual(bt.read(100, T(5)), b"")
        finally:
            bt.close()
        self.assertEqual(self.d.rec_reason(sid), PACKET_TIMEOUT)
        self.assertEqual(self.held_in_log(sid, bt.local_port, mark), 5)

    def test_partial_record_wss_1008(self):
        # On wss the client is told why: close 1008, close_notify, EOF.
        mark = self.d.mark()
        bt = BioTLS(self.d.ports[1], context(self.ca))
        ws = RawWS(self.d.ports[1], sock=bt)
        try:
            sid = self.d.rec_sid(bt.local_port)
            rec = bt.seal(frame(OP_BINARY, pkt(1, b"abcdef")))
            bt.sock.sendall(rec[:-1])
            ws.expect_close(1008, REASONS[PACKET_TIMEOUT], timeout=T(5))  # then close_notify
            self.assertEqual(read_raw_until_eof(bt.sock, T(5)), (b"", "eof"))
        finally:
            ws.close()
        self.assertEqual(self.d.rec_reason(sid), PACKET_TIMEOUT)
        self.assertEqual(self.d.rec_recv_lengths(sid), [])
        held = self.held_in_log(sid, bt.local_port, mark)
        self.assertTrue(0 < held <= len(rec) - 1,
                        "%d bytes held logged; %d of the record were sent" % (held, len(rec) - 1))


class TlsShutdown(unittest.TestCase):
    def test_sigterm_close_notify_after_data(self):
        # SIGTERM: every session gets what was queued for it, then (wss)
        # close 1001, then close_notify, then FIN; pierd exits 0.
        n = 256 * 1024
        tmp = TempDir()
        d = None
        try:
            make_cert(tmp.join("cert.pem"), tmp.join("key.pem"), "pier-sigterm")
            ca = tmp.join("cert.pem")
            d = Pierd([{"plugin": "stall", "framing": "u16_size_id", "tls": TLS_FILES},
                       {"plugin": "stall", "framing": "u16_size_id", "transport": "websocket",
                        "tls": TLS_FILES, "ping_interval_ms": 0}],
                      plugins=("stall",), tmp=tmp).start()
            clients = []
            for kind, port in (("tls", d.ports[0]), ("wss", d.ports[1])):
                s = connect(port)
                local = s.getsockname()[1]
                ss = context(ca).wrap_socket(s, server_hostname="127.0.0.1",
                                             suppress_ragged_eofs=False)
                ws = RawWS(port, sock=ss) if kind == "wss" else None
                sid = d.rec_sid(local)
                if ws:
                    ws.recv_message()
                    ws.send_frame(OP_BINARY, stall_pkt(ST_SEND, n))
                else:
                    recv_exact(ss, 5)
                    ss.sendall(stall_pkt(ST_SEND, n))
                d.wait_rec(r"sent %s %d 0" % (sid, n))
                clients.append((kind, ss, ws, sid))
            d.signal(signal.SIGTERM)
            for kind, ss, ws, sid in clients:
                with self.subTest(kind=kind):
                    if ws:
                        op, data = ws.recv_message(T(20))
                        self.assertTrue(data == pattern(n), "the message is not what was sent")
                        f = ws.recv_frame()
                        self.assertEqual((f.opcode, f.code, f.reason),
                                         (OP_CLOSE, 1001, REASONS[SHUTDOWN]))
                        self.assertEqual(ws.buf, b"")
                    else:
                        self.assertTrue(recv_all(ss, n) == pattern(n),
                                        "the data is not what was sent")
                    self.assertEqual(ss.recv(100), b"")  # close_notify
                    assert_fin(self, ss)
                    ss.unwrap()
                    ss.close()
                    self.assertEqual(d.rec_reason(sid), SHUTDOWN)
            d.proc.wait(T(20))
        finally:
            if d:
                d.stop()
            tmp.close()


class TlsSendCap(PierdCase):
    """With TLS the plaintext waiting to be sealed and the sealed bytes
    together are capped by max_send_queue."""
    LISTENERS = [
        {"plugin": "stall", "framing": "u16_size_id", "tls": TLS_FILES},
        {"plugin": "stall", "framing": "u16_size_id", "transport": "websocket", "tls": TLS_FILES,
         "ping_interval_ms": 0},
    ]
    PLUGINS = ("stall",)
    LIMITS = {"max_send_queue": 262144, "send_timeout_ms": 2000}

    @classmethod
    def prepare(cls, tmp):
        make_cert(tmp.join("cert.pem"), tmp.join("key.pem"), "pier-send-cap")
        cls.ca = tmp.join("cert.pem")

    def test_plugin_pushes_to_a_client_not_reading(self):
        # The plugin sends 64 KiB every millisecond to a client that reads
        # nothing: once the kernel's buffers are full the session is cut off
        # (its queue over max_send_queue, or no send progress), and pierd's
        # memory grows by no more than a bounded queue.
        for kind, port in (("tls", self.d.ports[0]), ("wss", self.d.ports[1])):
            with self.subTest(kind=kind):
                hwm0 = self.d.status_kb("VmHWM")
                s = connect(port, rcvbuf=4096)
                local = s.getsockname()[1]
                ss = context(self.ca).wrap_socket(s, server_hostname="127.0.0.1")
                try:
                    ws = RawWS(port, sock=ss) if kind == "wss" else None
                    sid = self.d.rec_sid(local)
                    if ws:
                        ws.recv_message()
                        ws.send_frame(OP_BINARY, stall_pkt(ST_PUSH, 65536))
                    else:
                        recv_exact(ss, 5)
                        ss.sendall(stall_pkt(ST_PUSH, 65536))
                    got = self.d.rec_reason(sid, T(20))
                    m = self.d.wait_rec(r"pushed %s (\d+) (-?\d+)" % sid)
                finally:
                    ss.close()
                self.assertIn(got, (SEND_QUEUE_FULL, SEND_TIMEOUT), REASONS.get(got))
                if got == SEND_QUEUE_FULL:
                    # -ENOBUFS, or -ENOTCONN when the send that overflowed came
                    # through another worker's inbox
                    self.assertIn(int(m.group(2)), (-ENOBUFS, -ENOTCONN))
                grown = self.d.status_kb("VmHWM") - hwm0
                note = "%s: VmHWM +%d kB, %s bytes pushed" % (kind, grown, m.group(1))
                print("send cap: " + note, file=sys.stderr)
                # An uncapped queue would hold what the kernel did not take,
                # 64 MB a second until send_timeout_ms.
                self.assertLess(grown, 16 * 1024 * SCALE, note)
        # Still serving.
        ss = context(self.ca).wrap_socket(connect(self.d.ports[0]), server_hostname="127.0.0.1")
        try:
            recv_exact(ss, 5)
            ss.sendall(pkt(ST_ECHO, b"after"))
            self.assertEqual(recv_exact(ss, 9), pkt(ST_ECHO, b"after"))
        finally:
            ss.close()


# SSL_* of the OpenSSL the ssl module uses, for what it does not offer.
_libssl = None


def libssl():
    global _libssl
    if _libssl is None:
        lib = ctypes.CDLL("libssl.so.3")
        for name in ("SSL_version", "SSL_is_server", "SSL_do_handshake"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        lib.SSL_key_update.argtypes = [ctypes.c_void_p, ctypes.c_int]
        _libssl = lib
    return _libssl


def ssl_pointer(sslobj):
    """The SSL * of an ssl.SSLObject: CPython's PySSLSocket is PyObject_HEAD,
    the socket's weak reference, then SSL *ssl."""
    lib = libssl()
    ptr = ctypes.c_void_p.from_address(id(sslobj._sslobj) + 2 * ctypes.sizeof(ctypes.c_void_p)
                                       + ctypes.sizeof(ctypes.c_ssize_t)).value
    if not ptr or lib.SSL_version(ptr) != 0x304 or lib.SSL_is_server(ptr) != 0:
        raise unittest.SkipTest("cannot reach the SSL object of this Python's ssl module")
    return ptr


class TlsFloods(PierdCase):
    """A client that makes pier answer (pongs over wss, TLS 1.3 KeyUpdates
    with update_requested) and reads nothing: pier stops reading it once
    its queue is half of max_send_queue, so the client's sends stop, and
    send_timeout_ms ends it."""
    LISTENERS = [
        {"plugin": "rec", "framing": "u16_size_id", "transport": "websocket", "tls": TLS_FILES,
         "ping_interval_ms": 0},
        {"plugin": "rec", "framing": "raw", "tls": TLS_FILES},
    ]
    PLUGINS = ("rec",)
    LIMITS = {"max_send_queue": 65536, "send_timeout_ms": 1000}

    @classmethod
    def prepare(cls, tmp):
        make_cert(tmp.join("cert.pem"), tmp.join("key.pem"), "pier-floods")
        cls.ca = tmp.join("cert.pem")

    def check_bound(self, what, hwm0, sent):
        grown = self.d.status_kb("VmHWM") - hwm0
        note = "%s: VmHWM +%d kB, %d sent" % (what, grown, sent)
        print("flood: " + note, file=sys.stderr)
        if not SANITIZED:  # ASan's quarantine keeps what OpenSSL freed
            self.assertLess(grown, 16 * 1024, note)

    def test_wss_ping_flood_not_reading(self):
        burst = b"".join(frame(OP_PING, b"p" * 125, key=b"\0\0\0\0") for _ in range(10000))
        hwm0 = self.d.status_kb("VmHWM")
        ws = RawWS(self.d.ports[0], ctx=context(self.ca), rcvbuf=4096)
        sent = 0
        try:
            sid = self.d.rec_sid(ws.local_port)
            ws.sock.settimeout(T(10))
            try:
                for _ in range(40):  # at most 400,000 pings, 52 MB
                    ws.sock.sendall(burst)
                    sent += 10000
                self.fail("pier read 400,000 pings it could not answer")
            except (socket.timeout, ssl.SSLError, ConnectionResetError, BrokenPipeError):
                pass
            got = self.d.rec_reason(sid, T(15))
        finally:
            ws.close()
        self.assertEqual(got, SEND_TIMEOUT, REASONS.get(got))
        self.check_bound("wss pings", hwm0, sent)

    def test_key_update_flood_not_reading(self):
        lib = libssl()
        bt = BioTLS(self.d.ports[1], context(self.ca, ssl.TLSVersion.TLSv1_3), rcvbuf=4096)
        sent = 0
        try:
            sid = self.d.rec_sid(bt.local_port)
            bt.send(b"hi")
            self.assertEqual(bt.read(10), b"hi")
            ptr = ssl_pointer(bt.obj)
            hwm0 = self.d.status_kb("VmHWM")
            bt.sock.settimeout(T(3))
            try:
                for _ in range(2000):  # at most 2,000,000 KeyUpdates, 44 MB
                    for _ in range(1000):
                        if lib.SSL_key_update(ptr, 1) != 1 or lib.SSL_do_handshake(ptr) != 1:
                            raise AssertionError("SSL_key_update failed")
                    bt.sock.sendall(bt.out.read())
                    sent += 1000
                self.fail("pier read 2,000,000 KeyUpdates it could not answer")
            except (socket.timeout, ConnectionResetError, BrokenPipeError):
                pass
            got = self.d.rec_reason(sid, T(15))
        finally:
            bt.close()
        self.assertEqual(got, SEND_TIMEOUT, REASONS.get(got))
        self.check_bound("KeyUpdates", hwm0, sent)


if __name__ == "__main__":
    unittest.main()
