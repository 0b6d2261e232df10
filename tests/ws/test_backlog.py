"""A session whose reading is paused for its plugin's backlog (a serial
plugin busy with another session, limits.recv_backlog passed): what it had
already received waits and is replayed, in order, when the plugin catches
up -- and the replay may close the session (a bad packet inside a TLS
record, a plugin send over max_send_queue inside a WebSocket message), which
must not touch the freed TLS or WebSocket state (the sanitizer builds run
this too). While paused, the session is not pinged for keepalive: it cannot
answer what pier does not read."""
import re
import socket
import ssl
import struct
import time
import unittest

from pierws import (OP_BINARY, OP_PING, OP_PONG, PACKET_TOO_SMALL, REASONS, SEND_QUEUE_FULL,
                    ST_ECHO, ST_STALL, SCALE, BioTLS, PierdCase, RawWS, T, frame, make_cert,
                    pkt, stall_pkt, unpkt, wait_eof)

TLS_FILES = {"cert": "cert.pem", "key": "key.pem"}
STALL_MS = int(600 * SCALE)


def tls13(ca):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    return ctx


class Client:
    """A session of the stall plugin on a u16_size_id listener: kind is
    "tls" (packets over TLS), "ws" or "wss" (one packet per binary
    message). worker is the worker the plugin's greeting named."""

    def __init__(self, kind, port, ca):
        self.kind = kind
        sock = BioTLS(port, tls13(ca)) if kind in ("tls", "wss") else None
        if kind == "tls":
            self.tls = sock
            self.local_port = sock.local_port
            greeting = self.tls.read_exact(5)
        else:
            self.ws = RawWS(port, sock=sock)
            self.local_port = self.ws.local_port
            op, greeting = self.ws.recv_message()
        pid, body = unpkt(greeting)
        assert pid == 1 and len(body) == 1, greeting
        self.worker = body[0]

    def wire(self, *parts):
        """Sends the parts in one write, as they are; over TLS each in its
        own records."""
        sock = self.tls if self.kind == "tls" else self.ws.sock
        if isinstance(sock, BioTLS):
            sock.sock.sendall(b"".join(sock.seal(p) for p in parts))
        else:
            sock.sendall(b"".join(parts))

    def send_packet(self, p):
        self.wire(p if self.kind == "tls" else frame(OP_BINARY, p))

    def recv_packet(self, timeout=None):
        if self.kind == "tls":
            head = self.tls.read_exact(4, timeout)
            return unpkt(head + self.tls.read_exact(struct.unpack("<H", head[:2])[0] - 4, timeout))
        return unpkt(self.ws.recv_message(timeout)[1])

    def raw_sock(self):
        return self.tls.sock if self.kind == "tls" else self.ws.sock

    def close(self):
        (self.tls if self.kind == "tls" else self.ws).close()


def paused_count(status):
    return int(re.search(r"reading paused (\d+) times", status).group(1))


class Backlog(PierdCase):
    LISTENERS = [
        {"plugin": "stall", "framing": "u16_size_id", "tls": TLS_FILES},
        {"plugin": "stall", "framing": "u16_size_id", "transport": "websocket",
         "ping_interval_ms": 0},
        {"plugin": "stall", "framing": "u16_size_id", "transport": "websocket",
         "tls": TLS_FILES, "ping_interval_ms": 0},
        {"plugin": "stall", "framing": "u16_size_id", "transport": "websocket",
         "ping_interval_ms": 200},
    ]
    PLUGINS = ({"name": "stall", "threading": "serial", "config": {"stall_ms": STALL_MS}},)
    LIMITS = {"recv_backlog": 4096, "max_packet_size": 16384, "slow_callback_ms": 0}
    TOP = {"workers": 2}

    @classmethod
    def prepare(cls, tmp):
        make_cert(tmp.join("cert.pem"), tmp.join("key.pem"), "pier-backlog")
        cls.ca = tmp.join("cert.pem")

    def pair(self, kind, port):
        """Two sessions on different workers: (a, b, extras to close)."""
        found, extras = {}, []
        for _ in range(20):
            c = Client(kind, port, self.ca)
            if c.worker in found:
                extras.append(c)
                continue
            found[c.worker] = c
            if len(found) == 2:
                a, b = found.values()
                return a, b, extras
        raise AssertionError("no two sessions on different workers in 20")

    def replay_closes(self, kind, port, good, bad, reason):
        """A stalls the serial plugin; B sends good (16 KiB, past
        recv_backlog: B is paused) and, in the same write (with TLS, in a
        record of its own), bad: read from the socket before the pause took
        effect, it is deferred, and when it is replayed it closes B."""
        before = paused_count(self.d.status())
        a, b, extras = self.pair(kind, port)
        try:
            sid_b = self.d.rec_sid(b.local_port)
            a.send_packet(stall_pkt(ST_STALL))
            time.sleep(0.1)  # the plugin is inside A's on_recv
            b.wire(good, bad)
            self.assertEqual(a.recv_packet(T(10)), (ST_STALL, b"woke"))
            got = self.d.rec_reason(sid_b)
            self.assertEqual(got, reason, REASONS.get(got))
            wait_eof(b.raw_sock(), T(10))
            self.assertGreater(paused_count(self.d.status()), before)
            self.d.assert_alive()
            # The others carry on.
            a.send_packet(pkt(ST_ECHO, b"still"))
            self.assertEqual(a.recv_packet(), (ST_ECHO, b"still"))
        finally:
            for c in [a, b] + extras:
                c.close()

    def test_tls_replay_bad_packet(self):
        # 16362 bytes of packets: one TLS 1.3 record of 16384 bytes (eight
        # whole 2 KiB receive buffers); then a record with a packet whose
        # size field is 2.
        good = pkt(5, b"x" * 60) * 255 + pkt(5, b"y" * 38)
        self.assertEqual(len(good), 16362)
        for attempt in range(2):
            with self.subTest(attempt=attempt):
                self.replay_closes("tls", self.d.ports[0], good, struct.pack("<HH", 2, 0),
                                   PACKET_TOO_SMALL)

    @staticmethod
    def ws_good(total):
        """Messages filling total bytes: 16384 for ws (eight whole 2 KiB
        receive buffers); 16362 for wss, one TLS 1.3 record of 16384."""
        msg = frame(OP_BINARY, pkt(5, b"x" * 56))  # 66 bytes
        n = total // len(msg) - 1
        good = msg * n
        good += frame(OP_BINARY, pkt(5, b"y" * (total - len(good) - 10)))
        assert len(good) == total
        return good

    def test_ws_replay_send_over_queue(self):
        # The replayed message makes the plugin send 2 MiB, over
        # max_send_queue: the session is cut off inside the replay.
        for attempt in range(2):
            with self.subTest(attempt=attempt):
                self.replay_closes("ws", self.d.ports[1], self.ws_good(16384),
                                   frame(OP_BINARY, stall_pkt(98)), SEND_QUEUE_FULL)

    def test_wss_replay_send_over_queue(self):
        for attempt in range(2):
            with self.subTest(attempt=attempt):
                self.replay_closes("wss", self.d.ports[2], self.ws_good(16362),
                                   frame(OP_BINARY, stall_pkt(98)), SEND_QUEUE_FULL)

    def test_no_keepalive_ping_while_paused(self):
        # ping_interval_ms 200: B, paused for the plugin's backlog for
        # 1.8 s, gets no ping (and is not closed for not answering one);
        # once the plugin catches up B is read again, its messages are
        # delivered in order, and keepalive goes on.
        stall = int(T(1.8) * 1000)
        a, b, extras = self.pair("ws", self.d.ports[3])
        try:
            sid_b = self.d.rec_sid(b.local_port)
            before = paused_count(self.d.status())
            a.send_packet(stall_pkt(ST_STALL, stall))
            time.sleep(0.1)
            start = time.monotonic()
            b.wire(self.ws_good(16384), frame(OP_BINARY, pkt(ST_ECHO, b"after the pause")))
            # 1.2 s: six ping intervals, all inside the stall.
            try:
                f = b.ws.recv_frame(timeout=max(0.05, start + 1.2 - time.monotonic()))
                self.fail("a frame while the session was paused: %r" % f)
            except socket.timeout:
                pass
            self.assertFalse(any(l.startswith("disconnected " + sid_b)
                                 for l in self.d.rec_lines()))
            self.assertGreater(paused_count(self.d.status()), before)
            self.assertEqual(a.recv_packet(T(15)), (ST_STALL, b"woke"))
            # B's echo comes after all it sent; a ping may come first (it
            # sent nothing for a while), and is answered.
            while True:
                f = b.ws.recv_frame(timeout=T(10))
                if f.opcode == OP_PING:
                    b.ws.send_frame(OP_PONG, f.payload)
                    continue
                self.assertEqual((f.opcode, f.payload),
                                 (OP_BINARY, pkt(ST_ECHO, b"after the pause")))
                break
            # Keepalive is back: a ping within a few intervals.
            f = b.ws.recv_frame(timeout=T(5))
            self.assertEqual(f.opcode, OP_PING, f)
            b.ws.send_frame(OP_PONG, f.payload)
            self.assertFalse(any(l.startswith("disconnected " + sid_b)
                                 for l in self.d.rec_lines()))
        finally:
            for c in [a, b] + extras:
                c.close()


if __name__ == "__main__":
    unittest.main()
