"""The close handshake both ways: a client's close is echoed and the TCP
connection ends; a close from the server side (a plugin, an operator's
kick, shutdown) sends its close code, then EOF."""
import asyncio
import unittest

import websockets

from pierws import (C_JOIN, KICKED, OP_BINARY, OP_CLOSE, OP_PING, PEER_CLOSED, S_SYSTEM,
                    SHUTDOWN, Pierd, PierdCase, RawWS, T, close_payload, joined_sid, pkt, run,
                    unpkt)


class Close(PierdCase):
    LISTENERS = [
        {"plugin": "rec", "framing": "u16_size_id", "transport": "websocket"},
        {"plugin": "chat", "framing": "u16_size_id", "transport": "websocket", "path": "/chat"},
    ]

    def test_client_close_1000_echoed(self):
        ws = RawWS(self.d.ports[0])
        try:
            sid = self.d.rec_sid(ws.local_port)
            ws.send_frame(OP_BINARY, pkt(1, b"before"))
            self.assertEqual(ws.recv_message(), (OP_BINARY, pkt(1, b"before")))
            ws.send_frame(OP_CLOSE, close_payload(1000, b"bye"))
            f = ws.expect_close(1000)
            self.assertTrue(f.fin)
            self.assertEqual(f.payload, close_payload(1000))
        finally:
            ws.close()
        self.assertEqual(self.d.rec_reason(sid), PEER_CLOSED)

    def test_client_close_other_codes(self):
        # Answered with the same code (config/README.md).
        for code in (1001, 1002, 1003, 1007, 1008, 1011, 3000, 4999):
            with self.subTest(code=code):
                ws = RawWS(self.d.ports[0])
                try:
                    sid = self.d.rec_sid(ws.local_port)
                    ws.send_frame(OP_CLOSE, close_payload(code, b"why"))
                    ws.expect_close(code)
                finally:
                    ws.close()
                self.assertEqual(self.d.rec_reason(sid), PEER_CLOSED)

    def test_client_close_empty(self):
        ws = RawWS(self.d.ports[0])
        try:
            sid = self.d.rec_sid(ws.local_port)
            ws.send_frame(OP_CLOSE, b"")
            ws.expect_close(1000)
        finally:
            ws.close()
        self.assertEqual(self.d.rec_reason(sid), PEER_CLOSED)

    def test_websockets_close(self):
        async def go():
            ws = await websockets.connect("ws://127.0.0.1:%d/" % self.d.ports[0],
                                          ping_interval=None, open_timeout=T(10),
                                          close_timeout=T(5))
            sid = self.d.rec_sid(ws.local_address[1])
            await ws.close(1000, "done")
            self.assertEqual(ws.close_code, 1000)
            return sid
        sid = run(go())
        self.assertEqual(self.d.rec_reason(sid), PEER_CLOSED)

    def test_tcp_close_without_close_frame(self):
        ws = RawWS(self.d.ports[0])
        sid = self.d.rec_sid(ws.local_port)
        ws.close()
        self.assertEqual(self.d.rec_reason(sid), PEER_CLOSED)

    def test_no_on_send_for_handshake(self):
        # The 101 is the transport's, not the plugin's: no on_send for it
        # (docs/DESIGN.md), nor for anything else the plugin did not send.
        ws = RawWS(self.d.ports[0])
        sid = self.d.rec_sid(ws.local_port)
        ws.close()  # no close frame: nothing more goes out
        self.d.rec_reason(sid)
        lines = [l for l in self.d.rec_lines() if sid in l]
        self.assertEqual([l.split()[0] for l in lines], ["connected", "disconnected"], lines)

    def test_on_send_counts(self):
        ws = RawWS(self.d.ports[0])
        try:
            sid = self.d.rec_sid(ws.local_port)
            p = pkt(1, b"12345")
            ws.send_frame(OP_BINARY, p)
            self.assertEqual(ws.recv_message(), (OP_BINARY, p))
            ws.send_frame(OP_PING, b"ping")
            self.assertEqual(ws.recv_frame().payload, b"ping")
            ws.send_frame(OP_CLOSE, close_payload(1000))
            ws.expect_close(1000)
        finally:
            ws.close()
        self.d.rec_reason(sid)
        sends = [int(l.split()[2]) for l in self.d.rec_lines() if l.startswith("send " + sid)]
        self.assertEqual(sends, [len(p)])

    def test_kick(self):
        # An operator's kick is 1008 (config/README.md's table).
        ws = RawWS(self.d.ports[0])
        try:
            sid = self.d.rec_sid(ws.local_port)
            rc, out, err = self.d.pierctl("kick", sid)
            self.assertEqual((rc, err), (0, ""))
            self.assertEqual(out, "kicked %s\n" % sid)
            ws.expect_close(1008, "kicked by an operator")
        finally:
            ws.close()
        self.assertEqual(self.d.rec_reason(sid), KICKED)

    def test_kick_websockets_client(self):
        async def go():
            ws = await websockets.connect("ws://127.0.0.1:%d/chat" % self.d.ports[1],
                                          ping_interval=None, open_timeout=T(10))
            await ws.send(pkt(C_JOIN, b"kicked"))
            pid, body = unpkt(await asyncio.wait_for(ws.recv(), T(10)))
            sid = joined_sid(body, b"kicked")
            rc, out, _ = await asyncio.get_running_loop().run_in_executor(
                None, self.d.pierctl, "kick", "%x" % sid)
            self.assertEqual(rc, 0)
            await asyncio.wait_for(ws.wait_closed(), T(10))
            self.assertEqual((ws.close_code, ws.close_reason), (1008, "kicked by an operator"))
        run(go())

    def test_plugin_close(self):
        # chat closes a session that sends an unknown packet id, after its
        # notice: the notice, then close 1000, then EOF.
        ws = RawWS(self.d.ports[1], "/chat")
        try:
            ws.send_frame(OP_BINARY, pkt(7, b"?"))
            self.assertEqual(ws.recv_message(), (OP_BINARY, pkt(S_SYSTEM, b"unknown packet id 7")))
            ws.expect_close(1000, "closed by the server")
        finally:
            ws.close()


class Shutdown(unittest.TestCase):
    def test_shutdown_1001(self):
        d = Pierd([{"plugin": "rec", "framing": "u16_size_id", "transport": "websocket"}],
                  plugins=("rec",))
        try:
            d.start()
            ws = RawWS(d.ports[0])
            sid = d.rec_sid(ws.local_port)
            d.console("quit")
            ws.expect_close(1001, "server shutting down")
            ws.close()
            self.assertEqual(d.rec_reason(sid), SHUTDOWN)
        finally:
            d.stop()


if __name__ == "__main__":
    unittest.main()
