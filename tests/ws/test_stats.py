"""`pierctl status` after sessions that never reached the plugin (static
files, refusals, a handshake that timed out or failed) and sessions that
did: nothing stays counted as open, and the handshake line counts each
outcome once."""
import re
import time
import unittest

from pierws import (OP_BINARY, OP_PING, PING_TIMEOUT, PROTOCOL_ERROR, PierdCase, RawWS, T,
                    client_context, connect, http_get, make_cert, pkt, wait_eof)

INDEX = b"<!doctype html>\n<title>stats</title>\n"


class Stats(PierdCase):
    LISTENERS = [
        {"plugin": "rec", "framing": "u16_size_id", "transport": "websocket", "path": "/ws",
         "static": "web", "handshake_timeout_ms": 300, "ping_interval_ms": 0},
        {"plugin": "rec", "framing": "u16_size_id", "tls": {"cert": "cert.pem", "key": "key.pem"},
         "handshake_timeout_ms": 300},
        {"plugin": "rec", "framing": "u16_size_id", "transport": "websocket",
         "ping_interval_ms": 200},
    ]
    PLUGINS = ("rec",)

    @classmethod
    def prepare(cls, tmp):
        tmp.write("web/index.html", INDEX)
        make_cert(tmp.join("cert.pem"), tmp.join("key.pem"), "pier-stats")
        cls.ca = tmp.join("cert.pem")

    def wait_status(self, pattern):
        end = time.monotonic() + T(10)
        while True:
            out = self.d.status()
            if re.search(pattern, out, re.M):
                return out
            if time.monotonic() > end:
                raise AssertionError("status never showed /%s/:\n%s" % (pattern, out))
            time.sleep(0.05)

    def test_counts(self):
        ws_port, tls_port, ping_port = self.d.ports
        # Three static files and a 404: no handshake done, one refused.
        for _ in range(3):
            status, _, body = http_get(ws_port, "/")
            self.assertEqual((status, body), (200, INDEX))
        self.assertEqual(http_get(ws_port, "/nope")[0], 404)
        # A connection that sends nothing: timed out.
        s = connect(ws_port)
        self.assertEqual(wait_eof(s, T(10)), b"")
        s.close()
        # Plain HTTP to the TLS port: a failed TLS handshake.
        s = connect(tls_port)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_eof(s)
        s.close()
        # Three handshakes done: a TLS session that ends normally, a
        # WebSocket one closed for an unmasked frame, one for no pong.
        ss = client_context(self.ca).wrap_socket(connect(tls_port), server_hostname="127.0.0.1")
        ss.sendall(pkt(1, b"tls"))
        self.assertEqual(ss.recv(100), pkt(1, b"tls"))
        ss.close()
        ws = RawWS(ws_port, "/ws")
        sid = self.d.rec_sid(ws.local_port)
        ws.send_frame(OP_BINARY, pkt(1, b"x"), mask=False)
        ws.expect_close(1002)
        ws.close()
        self.assertEqual(self.d.rec_reason(sid), PROTOCOL_ERROR)
        ws = RawWS(ping_port)
        sid = self.d.rec_sid(ws.local_port)
        self.assertEqual(ws.recv_frame(timeout=T(5)).opcode, OP_PING)  # not answered
        self.assertEqual(self.d.rec_reason(sid), PING_TIMEOUT)
        ws.close()

        out = self.wait_status(r"^sessions 0 open, ")
        lines = out.splitlines()
        self.assertTrue(lines[1].startswith("sessions 0 open, 9 accepted, 0 refused "), out)
        self.assertEqual(lines[2], "handshakes 3 done, 2 refused or failed, 1 timed out; "
                                   "3 static files served; 1 closed for WebSocket protocol "
                                   "errors, 1 for no pong", out)
        listeners = [l for l in lines if l.startswith("listener ")]
        self.assertEqual(len(listeners), 3, out)
        for l in listeners:
            self.assertTrue(l.endswith(": 0 sessions"), out)


if __name__ == "__main__":
    unittest.main()
