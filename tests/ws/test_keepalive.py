"""Keepalive: with ping_interval_ms set, a peer that answers pings stays
connected and one that does not is closed; a flood of pings costs pier a
bounded amount of memory, and every ping of a reading client is answered."""
import asyncio
import socket
import sys
import threading
import time
import unittest

import websockets

from pierws import (IDLE_TIMEOUT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, PING_TIMEOUT, REASONS,
                    SCALE, SEND_QUEUE_FULL, SEND_TIMEOUT, PierdCase, RawWS, T, frame, pkt, run,
                    wait_eof)

FLOOD = 10000
# The keepalive interval, and the time a client has to answer a ping: longer
# under the sanitizers, where a loaded machine can delay an answer by more
# than 300 ms.
PING_MS = int(300 * SCALE)
PING = PING_MS / 1000


class Keepalive(PierdCase):
    LISTENERS = [
        {"plugin": "rec", "framing": "u16_size_id", "transport": "websocket",
         "ping_interval_ms": PING_MS},
        {"plugin": "rec", "framing": "u16_size_id", "transport": "websocket",
         "ping_interval_ms": 0},
    ]
    PLUGINS = ("rec",)
    LIMITS = {"max_send_queue": 65536, "send_timeout_ms": 1000}

    def assert_open(self, sid):
        self.assertFalse(any(l.startswith("disconnected " + sid) for l in self.d.rec_lines()),
                         "session %s was closed" % sid)

    def test_websockets_client_stays(self):
        async def go():
            ws = await websockets.connect("ws://127.0.0.1:%d/" % self.d.ports[0],
                                          ping_interval=None, open_timeout=T(10))
            try:
                sid = self.d.rec_sid(ws.local_address[1])
                await asyncio.sleep(7 * PING)  # several ping intervals, answered by the client
                self.assert_open(sid)
                await ws.send(pkt(1, b"still here"))
                self.assertEqual(await asyncio.wait_for(ws.recv(), T(10)), pkt(1, b"still here"))
            finally:
                await ws.close()
        run(go())

    def test_raw_client_answering_pings_stays(self):
        ws = RawWS(self.d.ports[0])
        try:
            sid = self.d.rec_sid(ws.local_port)
            pings = []
            end = time.monotonic() + 7 * PING
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    break
                try:
                    f = ws.recv_frame(timeout=left)
                except socket.timeout:
                    break
                self.assertEqual(f.opcode, OP_PING, f)
                self.assertTrue(f.fin)
                self.assertLessEqual(len(f.payload), 125)
                pings.append(f.payload)
                ws.send_frame(OP_PONG, f.payload)
            self.assertGreaterEqual(len(pings), 2)
            self.assert_open(sid)
            ws.send_frame(OP_BINARY, pkt(2, b"alive"))
            self.assertEqual(ws.recv_message(), (OP_BINARY, pkt(2, b"alive")))
        finally:
            ws.close()

    def test_silent_client_closed(self):
        mark = self.d.mark()
        start = time.monotonic()
        ws = RawWS(self.d.ports[0])
        try:
            sid = self.d.rec_sid(ws.local_port)
            f = ws.recv_frame(timeout=T(5))
            self.assertEqual((f.opcode, f.fin), (OP_PING, True))
            self.assertGreaterEqual(time.monotonic() - start, 0.8 * PING)
            # Then nothing from this side: the server gives up one interval
            # later. A close frame, if one comes first, says why.
            try:
                f = ws.recv_frame(timeout=T(5))
                self.assertEqual(f.opcode, OP_CLOSE, f)
                self.assertEqual(f.reason, REASONS[PING_TIMEOUT])
                self.assertEqual(ws.buf + wait_eof(ws.sock, T(5)), b"")
            except (EOFError, ConnectionResetError):
                pass
            took = time.monotonic() - start
        finally:
            ws.close()
        self.assertGreaterEqual(took, 1.6 * PING)
        self.assertLess(took, T(3))
        got = self.d.rec_reason(sid)
        self.assertEqual(got, PING_TIMEOUT, REASONS.get(got))
        self.d.wait_log(r"session %s 127\.0\.0\.1:%d: no answer to a keepalive ping within %d ms; "
                        r"closing" % (sid, ws.local_port, PING_MS), since=mark)

    def test_data_counts_as_an_answer(self):
        # A client that keeps sending (but never answers a ping) is alive.
        ws = RawWS(self.d.ports[0])
        try:
            sid = self.d.rec_sid(ws.local_port)
            end = time.monotonic() + 5 * PING
            n = 0
            while time.monotonic() < end:
                ws.send_frame(OP_BINARY, pkt(3, b"%d" % n))
                while True:
                    op, data = self.next_data(ws)
                    if data == pkt(3, b"%d" % n):
                        break
                n += 1
                time.sleep(0.1)
            self.assert_open(sid)
        finally:
            ws.close()

    @staticmethod
    def next_data(ws):
        while True:
            f = ws.recv_frame()
            if f.opcode == OP_PING:
                continue  # not answered
            return f.opcode, f.payload

    def flood(self, n):
        return b"".join(frame(OP_PING, b"%05d" % i + b"p" * 120) for i in range(n))

    def test_ping_flood_not_reading(self):
        # 10,000 pongs (1.3 MB) fit in the kernel's socket buffers (up to
        # tcp_wmem's 4 MiB on the server's side), so that alone would not
        # press on pier; the flood goes on, 10,000 pings at a time, until
        # the session is cut off: then pier's queue is what fills up.
        burst = b"".join(frame(OP_PING, b"p" * 125, key=b"\0\0\0\0") for _ in range(FLOOD))
        rss0, hwm0 = self.d.status_kb("VmRSS"), self.d.status_kb("VmHWM")
        ws = RawWS(self.d.ports[1], rcvbuf=4096)
        sent = 0
        try:
            sid = self.d.rec_sid(ws.local_port)
            ws.sock.settimeout(T(15))
            try:
                for _ in range(20):  # at most 200,000 pings, 26 MB
                    ws.sock.sendall(burst)
                    sent += FLOOD
            except (BrokenPipeError, ConnectionResetError, socket.timeout):
                pass
            got = self.d.rec_reason(sid, T(15))
        finally:
            ws.close()
        self.assertIn(got, (SEND_QUEUE_FULL, SEND_TIMEOUT), REASONS.get(got))
        hwm1 = self.d.status_kb("VmHWM")
        sys_note = "VmRSS %d kB before, VmHWM %d -> %d kB, %d pings sent" % (rss0, hwm0, hwm1, sent)
        # An unbounded pong queue would hold what was sent (up to 26 MB);
        # pier's is max_send_queue (64 KiB). The sanitizers' shadow memory
        # and io_uring's buffers take their share of the rest.
        self.assertLess(hwm1 - hwm0, 16 * 1024 * SCALE, sys_note)
        print("ping flood: " + sys_note, file=sys.stderr)
        # Still serving.
        ws = RawWS(self.d.ports[1])
        try:
            ws.send_frame(OP_BINARY, pkt(4, b"after"))
            self.assertEqual(ws.recv_message(), (OP_BINARY, pkt(4, b"after")))
        finally:
            ws.close()

    def test_ping_flood_reading(self):
        want = [b"%05d" % i + b"p" * 120 for i in range(FLOOD)]
        blob = self.flood(FLOOD)
        ws = RawWS(self.d.ports[1])
        pongs, errors = [], []

        def read():
            try:
                while len(pongs) < FLOOD:
                    f = ws.recv_frame(timeout=T(20))
                    if f.opcode != OP_PONG:
                        errors.append(f)
                        return
                    pongs.append(f.payload)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
        t = threading.Thread(target=read, daemon=True)
        try:
            sid = self.d.rec_sid(ws.local_port)
            t.start()
            ws.sock.sendall(blob)
            t.join(T(30))
            self.assertFalse(t.is_alive(), "pongs: %d of %d" % (len(pongs), FLOOD))
            self.assertEqual(errors, [])
            self.assertEqual(len(pongs), FLOOD)
            self.assertTrue(pongs == want, "pongs out of order or changed")
            self.assert_open(sid)
            ws.send_frame(OP_CLOSE, b"\x03\xe8")
            ws.expect_close(1000)
        finally:
            ws.close()


class IdleTimeout(PierdCase):
    """limits.idle_timeout_ms on a WebSocket session: close code 1001."""
    LISTENERS = [{"plugin": "rec", "framing": "u16_size_id", "transport": "websocket",
                  "ping_interval_ms": 0}]
    PLUGINS = ("rec",)
    LIMITS = {"idle_timeout_ms": 400}

    def test_idle_1001(self):
        start = time.monotonic()
        ws = RawWS(self.d.ports[0])
        try:
            sid = self.d.rec_sid(ws.local_port)
            ws.expect_close(1001, REASONS[IDLE_TIMEOUT], timeout=T(5))
        finally:
            ws.close()
        self.assertGreaterEqual(time.monotonic() - start, 0.35)
        self.assertEqual(self.d.rec_reason(sid), IDLE_TIMEOUT)


if __name__ == "__main__":
    unittest.main()
