"""The close handshake both ways: a client's close is echoed and the TCP
connection ends; a close from the server side (a plugin, an operator's
kick, shutdown, a quarantined plugin) sends its close code, then EOF.
on_send counts the plugin's bytes alone, over ws://, wss:// and TLS."""
import asyncio
import ssl
import unittest

import websockets

from pierws import (C_JOIN, KICKED, OP_BINARY, OP_CLOSE, OP_PING, PEER_CLOSED, PLUGIN_ERROR,
                    REASONS, S_SYSTEM, SHUTDOWN, Pierd, PierdCase, RawWS, T, client_context,
                    close_payload, connect, joined_sid, make_cert, pkt, recv_exact, run,
                    test_plugin_path, unpkt, wait_eof)


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


class OnSendTls(PierdCase):
    """What on_send reports through TLS: the plugin's bytes, never the
    101, TLS 1.3's session tickets, pongs, close frames or close_notify."""
    LISTENERS = [
        {"plugin": "rec", "framing": "u16_size_id", "transport": "websocket",
         "tls": {"cert": "cert.pem", "key": "key.pem"}, "ping_interval_ms": 0},
        {"plugin": "rec", "framing": "u16_size_id", "tls": {"cert": "cert.pem", "key": "key.pem"}},
    ]
    PLUGINS = ("rec",)

    @classmethod
    def prepare(cls, tmp):
        make_cert(tmp.join("cert.pem"), tmp.join("key.pem"), "pier-on-send")
        cls.ca = tmp.join("cert.pem")

    def context(self, version):
        ctx = client_context(self.ca)
        ctx.minimum_version = ctx.maximum_version = version
        return ctx

    def sends(self, sid):
        self.d.rec_reason(sid)
        return [int(l.split()[2]) for l in self.d.rec_lines() if l.startswith("send " + sid)]

    def test_nothing_sent_nothing_counted(self):
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            for i in (0, 1):
                with self.subTest(version=version.name, listener=("wss", "tls")[i]):
                    s = connect(self.d.ports[i])
                    local = s.getsockname()[1]
                    ss = self.context(version).wrap_socket(s, server_hostname="127.0.0.1")
                    if i == 0:
                        RawWS(self.d.ports[0], sock=ss)
                    sid = self.d.rec_sid(local)
                    ss.unwrap().close()  # close_notify both ways
                    self.assertEqual(self.sends(sid), [])
                    lines = [l for l in self.d.rec_lines() if sid in l]
                    self.assertEqual([l.split()[0] for l in lines], ["connected", "disconnected"],
                                     lines)

    def test_wss_counts(self):
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            with self.subTest(version=version.name):
                s = connect(self.d.ports[0])
                local = s.getsockname()[1]
                ws = RawWS(self.d.ports[0], sock=self.context(version).wrap_socket(
                    s, server_hostname="127.0.0.1"))
                try:
                    sid = self.d.rec_sid(local)
                    p = pkt(1, b"12345")
                    ws.send_frame(OP_BINARY, p)
                    self.assertEqual(ws.recv_message(), (OP_BINARY, p))
                    ws.send_frame(OP_PING, b"ping")
                    self.assertEqual(ws.recv_frame().payload, b"ping")
                    ws.send_frame(OP_CLOSE, close_payload(1000))
                    ws.expect_close(1000)
                finally:
                    ws.close()
                self.assertEqual(self.sends(sid), [len(p)])

    def test_tls_counts(self):
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            with self.subTest(version=version.name):
                s = connect(self.d.ports[1])
                local = s.getsockname()[1]
                ss = self.context(version).wrap_socket(s, server_hostname="127.0.0.1")
                sid = self.d.rec_sid(local)
                p = pkt(1, b"x" * 100)
                ss.sendall(p)
                self.assertEqual(recv_exact(ss, len(p)), p)
                ss.sendall(p + p)
                self.assertEqual(recv_exact(ss, 2 * len(p)), p + p)
                ss.unwrap().close()
                sends = self.sends(sid)
                self.assertEqual(sum(sends), 3 * len(p), sends)

    def test_tls_counts_on_a_reused_port(self):
        # The kernel gives a local port out again, here to a connection to
        # the other listener: the session found by that port is the new one,
        # not the earlier session that had it (which sent nothing).
        s = connect(self.d.ports[0], local_port=0)  # SO_REUSEADDR on both, for the bind
        local = s.getsockname()[1]
        ss = self.context(ssl.TLSVersion.TLSv1_3).wrap_socket(s, server_hostname="127.0.0.1")
        RawWS(self.d.ports[0], sock=ss)
        old = self.d.rec_sid(local)
        ss.unwrap().close()
        self.assertEqual(self.sends(old), [])
        s = connect(self.d.ports[1], local_port=local)
        ss = self.context(ssl.TLSVersion.TLSv1_3).wrap_socket(s, server_hostname="127.0.0.1")
        sid = self.d.rec_sid(local)
        self.assertNotEqual(sid, old)
        p = pkt(1, b"x" * 100)
        ss.sendall(p)
        self.assertEqual(recv_exact(ss, len(p)), p)
        ss.unwrap().close()
        self.assertEqual(self.sends(sid), [len(p)])


class PluginFailure(unittest.TestCase):
    def test_quarantine_closes_with_1011(self):
        # A plugin quarantined (quarantine_after 1: its first fail()) has
        # its sessions closed gracefully with reason "plugin failed": on
        # WebSocket, close 1011.
        d = Pierd([{"plugin": "failing", "framing": "u16_size_id", "transport": "websocket",
                    "ping_interval_ms": 0}],
                  plugins=({"name": "failing", "path": test_plugin_path("failing")},),
                  limits={"quarantine_after": 1})
        try:
            d.start()
            idle = RawWS(d.ports[0])
            ws = RawWS(d.ports[0])
            ws.send_frame(OP_BINARY, pkt(1, b"fail"))
            for c in (ws, idle):
                with self.subTest(client="failing" if c is ws else "idle"):
                    while True:  # the echo may or may not go out first
                        f = c.recv_frame()
                        if f.opcode == OP_BINARY and c is ws:
                            self.assertEqual(f.payload, pkt(1, b"fail"))
                            continue
                        break
                    self.assertEqual((f.opcode, f.code, f.reason),
                                     (OP_CLOSE, 1011, REASONS[PLUGIN_ERROR]))
                    self.assertEqual(c.buf + wait_eof(c.sock), b"")
                    c.close()
            d.wait_log(r'plugin "failing" quarantined after 1 failures \(last: reported failure: '
                       r'could not handle the packet\): closing its 2 sessions')
        finally:
            d.stop()


if __name__ == "__main__":
    unittest.main()
