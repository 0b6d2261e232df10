"""Keepalive: with ping_interval_ms set, a peer that answers pings stays
connected and one that does not is closed; a flood of pings costs pier a
bounded amount of memory, and every ping of a reading client is answered."""
import asyncio
import socket
import threading
import time
import unittest

import websockets

from pierws import (OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, PING_TIMEOUT, REASONS,
                    SEND_QUEUE_FULL, SEND_TIMEOUT, PierdCase, RawWS, T, frame, pkt, run,
                    wait_eof)

FLOOD = 10000


class Keepalive(PierdCase):
    LISTENERS = [
        {"plugin": "rec", "framing": "u16_size_id", "transport": "websocket",
         "ping_interval_ms": 300},
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
                await asyncio.sleep(2)  # several ping intervals, answered by the client
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
            end = time.monotonic() + 2
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
            self.assertEqual(f.opcode, OP_PING)
            self.assertGreaterEqual(time.monotonic() - start, 0.25)
            # Then nothing: the server gives up after another interval.
            f = ws.recv_frame(timeout=T(5))
            self.assertEqual(f.opcode, OP_CLOSE, f)
            self.assertEqual(f.code, 1001)
            self.assertEqual(ws.buf + wait_eof(ws.sock, T(5)), b"")
            took = time.monotonic() - start
        finally:
            ws.close()
        self.assertGreaterEqual(took, 0.5)
        self.assertLess(took, T(3))
        got = self.d.rec_reason(sid)
        self.assertEqual(got, PING_TIMEOUT, REASONS.get(got))
        self.d.wait_log(REASONS[PING_TIMEOUT], since=mark)

    def test_data_counts_as_an_answer(self):
        # A client that keeps sending (but never answers a ping) is alive.
        ws = RawWS(self.d.ports[0])
        try:
            sid = self.d.rec_sid(ws.local_port)
            end = time.monotonic() + 1.5
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
        blob = self.flood(FLOOD)
        rss0, hwm0 = self.d.status_kb("VmRSS"), self.d.status_kb("VmHWM")
        ws = RawWS(self.d.ports[1], rcvbuf=4096)
        try:
            sid = self.d.rec_sid(ws.local_port)
            ws.sock.settimeout(T(15))
            try:
                ws.sock.sendall(blob)  # the server stops reading; then cuts the session off
            except (BrokenPipeError, ConnectionResetError):
                pass
            got = self.d.rec_reason(sid, T(15))
        finally:
            ws.close()
        self.assertIn(got, (SEND_QUEUE_FULL, SEND_TIMEOUT), REASONS.get(got))
        hwm1 = self.d.status_kb("VmHWM")
        sys_note = "VmRSS %d kB before, VmHWM %d -> %d kB" % (rss0, hwm0, hwm1)
        self.assertLess(hwm1 - hwm0, 32 * 1024, sys_note)
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


if __name__ == "__main__":
    unittest.main()
