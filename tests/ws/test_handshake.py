"""The HTTP side of a WebSocket listener: the Upgrade handshake and its
refusals, the origins allow-list, the head size cap and deadline, and the
static files."""
import os
import threading
import time
import unittest

import websockets
import websockets.exceptions

from pierws import (OP_BINARY, Pierd, PierdCase, RawWS, T, TempDir, accept_for, client_context,
                    connect, header, http_exchange, http_get, make_cert, pkt, read_http, run,
                    run_check, unpkt, upgrade_request, wait_eof)

INDEX = b"<!doctype html>\n<title>pier test</title>\n<p>hello from the static dir</p>\n"
APP_JS = b"console.log('pier');\n"
STYLE = b"body { color: #123; }\n"
SECRET = b"not for the web\n"
ORIGINS = ["http://allowed.example:8080", "https://game.example"]


class Handshake(PierdCase):
    LISTENERS = [
        # 0: the WebSocket path /chat and a static directory.
        {"plugin": "rec", "framing": "u16_size_id", "transport": "websocket", "path": "/chat",
         "static": "static", "handshake_timeout_ms": 1000},
        # 1: an origins allow-list.
        {"plugin": "rec", "framing": "u16_size_id", "transport": "websocket", "path": "/chat",
         "origins": ORIGINS},
        # 2: every default (path "/", no static directory).
        {"plugin": "rec", "framing": "u16_size_id", "transport": "websocket"},
    ]
    PLUGINS = ("rec",)

    @classmethod
    def prepare(cls, tmp):
        tmp.write("static/index.html", INDEX)
        tmp.write("static/app.js", APP_JS)
        tmp.write("static/style.css", STYLE)
        tmp.write("static/sub/index.html", b"sub index\n")
        tmp.write("secret.txt", SECRET)
        os.symlink(tmp.join("secret.txt"), tmp.join("static", "leak.txt"))
        os.symlink("..", tmp.join("static", "up"))

    @property
    def port(self):
        return self.d.ports[0]

    # -- the upgrade --

    def test_101_accept(self):
        # RFC 6455 section 1.3's example key and its answer.
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        self.assertEqual(accept_for(key), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        s = connect(self.port)
        try:
            s.sendall(upgrade_request(self.port, "/chat", key))
            status, headers, rest = read_http(s)
            self.assertEqual(status, 101)
            self.assertEqual(rest, b"")
            self.assertEqual(header(headers, "sec-websocket-accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            self.assertEqual(header(headers, "upgrade").lower(), "websocket")
            self.assertEqual(header(headers, "connection").lower(), "upgrade")
            self.assertIsNone(header(headers, "sec-websocket-extensions"))
            self.assertIsNone(header(headers, "sec-websocket-protocol"))
        finally:
            s.close()

    def test_query_string_ignored(self):
        ws = RawWS(self.port, "/chat?room=red&x=1")
        try:
            ws.send_frame(OP_BINARY, pkt(7, b"q"))
            self.assertEqual(ws.recv_message(), (OP_BINARY, pkt(7, b"q")))
        finally:
            ws.close()

    def test_websockets_client_deflate_declined(self):
        async def go():
            # The client offers permessage-deflate (its default).
            async with websockets.connect("ws://127.0.0.1:%d/chat" % self.port,
                                          compression="deflate", ping_interval=None,
                                          open_timeout=T(10)) as ws:
                self.assertIsNone(ws.response_headers.get("Sec-WebSocket-Extensions"))
                self.assertEqual(ws.extensions, [])
                await ws.send(pkt(9, b"x" * 300))  # compressible: sent as is
                self.assertEqual(unpkt(await ws.recv()), (9, b"x" * 300))
        run(go())

    def test_raw_deflate_offer_declined(self):
        s = connect(self.port)
        try:
            s.sendall(upgrade_request(
                self.port, "/chat",
                extra="Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                      "Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n"))
            status, headers, _ = read_http(s)
            self.assertEqual(status, 101)
            self.assertIsNone(header(headers, "sec-websocket-extensions"))
        finally:
            s.close()

    def refused(self, request, port=None):
        status, headers, body = http_exchange(port or self.port, request)
        return status, headers, body

    def test_wrong_path_404(self):
        status, headers, _ = self.refused(upgrade_request(self.port, "/nope"))
        self.assertEqual(status, 404)
        self.assertIsNone(header(headers, "sec-websocket-accept"))

        async def go():
            with self.assertRaises(websockets.exceptions.InvalidStatusCode) as cm:
                async with websockets.connect("ws://127.0.0.1:%d/other" % self.port,
                                              open_timeout=T(10)):
                    pass
            self.assertEqual(cm.exception.status_code, 404)
        run(go())

    def test_version_12_426(self):
        status, headers, _ = self.refused(upgrade_request(self.port, "/chat", version=12))
        self.assertEqual(status, 426)
        self.assertEqual(header(headers, "sec-websocket-version"), "13")

    def test_bad_key_400(self):
        for key in ("abc", "AAAAAAAAAAAAAAAAAAAA", "dGhlIHNhbXBsZSBub25jZQ", "!!!!!!!!!!!!!!!!!!!!!!=="):
            with self.subTest(key=key):
                status, _, _ = self.refused(upgrade_request(self.port, "/chat", key=key))
                self.assertEqual(status, 400)

    def test_no_key_400(self):
        req = ("GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        self.assertEqual(self.refused(req)[0], 400)

    def test_http10_400(self):
        req = upgrade_request(self.port, "/chat").replace(b"HTTP/1.1", b"HTTP/1.0", 1)
        self.assertEqual(self.refused(req)[0], 400)

    def test_garbage_400(self):
        self.assertEqual(self.refused(b"HELLO\r\n\r\n")[0], 400)

    def test_no_upgrade_callbacks(self):
        # Refused requests never reach the plugin.
        s = connect(self.port)
        s.sendall(upgrade_request(self.port, "/nope"))
        self.assertEqual(read_http(s)[0], 404)
        wait_eof(s)
        port = s.getsockname()[1]
        s.close()
        ws = RawWS(self.port, "/chat")  # a later session shows the recorder is up to date
        self.d.rec_sid(ws.local_port)
        ws.close()
        self.assertFalse(any("127.0.0.1:%d" % port in l for l in self.d.rec_lines()))

    # -- origins --

    def origin_status(self, origin):
        port = self.d.ports[1]
        return self.refused(upgrade_request(port, "/chat", origin=origin), port)[0]

    def test_origin_allowed(self):
        for origin in ORIGINS + ["HTTPS://GAME.EXAMPLE"]:
            with self.subTest(origin=origin):
                ws = RawWS(self.d.ports[1], "/chat", origin=origin)
                ws.send_frame(OP_BINARY, pkt(5, b"o"))
                self.assertEqual(ws.recv_message(), (OP_BINARY, pkt(5, b"o")))
                ws.close()

    def test_origin_refused_403(self):
        for origin in ("http://evil.example", "http://allowed.example", "https://game.example.evil",
                       "null"):
            with self.subTest(origin=origin):
                self.assertEqual(self.origin_status(origin), 403)

        async def go():
            with self.assertRaises(websockets.exceptions.InvalidStatusCode) as cm:
                async with websockets.connect("ws://127.0.0.1:%d/chat" % self.d.ports[1],
                                              origin="http://evil.example", open_timeout=T(10)):
                    pass
            self.assertEqual(cm.exception.status_code, 403)
        run(go())

    def test_no_origin_allowed(self):
        ws = RawWS(self.d.ports[1], "/chat")
        ws.close()

    def test_any_origin_without_list(self):
        ws = RawWS(self.port, "/chat", origin="http://anything.example")
        ws.close()

    # -- head size cap and deadline --

    def test_head_just_under_cap(self):
        base = upgrade_request(self.port, "/chat", extra="X-Pad: \r\n")
        pad = 8192 - len(base)
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        req = upgrade_request(self.port, "/chat", key, extra="X-Pad: %s\r\n" % ("p" * pad))
        self.assertEqual(len(req), 8192)
        s = connect(self.port)
        try:
            s.sendall(req)
            status, headers, _ = read_http(s)
            self.assertEqual(status, 101)
        finally:
            s.close()

    def test_head_over_cap(self):
        req = upgrade_request(self.port, "/chat", extra="X-Pad: %s\r\n" % ("p" * 9000))
        status, headers, body = self.refused(req)
        self.assertEqual(status, 431)

    def test_431_phrase(self):
        # The status line and body name the status (RFC 6585 5).
        s = connect(self.port)
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n")
            got = wait_eof(s)
        finally:
            s.close()
        head, _, body = got.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.assertEqual(lines[0], b"HTTP/1.1 431 Request Header Fields Too Large")
        self.assertIn(b"Content-Length: %d" % len(body), lines)
        self.assertEqual(body, b"431 Request Header Fields Too Large\n")

    def test_head_over_cap_unfinished(self):
        # 9 KiB of header that never ends: refused once past 8 KiB, without
        # waiting for the rest.
        s = connect(self.port)
        try:
            s.sendall(b"GET /chat HTTP/1.1\r\nX-Pad: " + b"p" * 9000)
            status, _, _ = read_http(s)
            self.assertEqual(status, 431)
            wait_eof(s)
        finally:
            s.close()

    def test_slowloris(self):
        mark = self.d.mark()
        s = connect(self.port)
        port = s.getsockname()[1]
        req = upgrade_request(self.port, "/chat")
        self.assertGreater(len(req) * 0.2, 5)  # it would take far longer than the deadline
        stop = threading.Event()

        def dribble():
            for b in req:
                if stop.wait(0.2):
                    return
                try:
                    s.send(bytes([b]))
                except OSError:
                    return
        t = threading.Thread(target=dribble, daemon=True)
        start = time.monotonic()
        t.start()
        try:
            got = wait_eof(s, T(10))
            took = time.monotonic() - start
        finally:
            stop.set()
            t.join()
            s.close()
        self.assertGreaterEqual(took, 0.9)
        self.assertLess(took, T(4))
        self.assertEqual(got, b"")  # no response at all
        self.d.wait_log(r"127\.0\.0\.1:%d: handshake not completed within 1000 ms "
                        r"\(handshake_timeout_ms\); closing" % port, since=mark)
        self.assertFalse(any("127.0.0.1:%d" % port in l for l in self.d.rec_lines()))

    # -- static files --

    def test_index(self):
        for path in ("/", "/index.html", "/?x=1"):
            with self.subTest(path=path):
                status, headers, body = http_get(self.port, path)
                self.assertEqual(status, 200)
                self.assertEqual(body, INDEX)
                self.assertEqual(header(headers, "content-type"), "text/html; charset=utf-8")
                self.assertEqual(header(headers, "content-length"), str(len(INDEX)))
                self.assertEqual(header(headers, "connection"), "close")
                self.assertEqual(header(headers, "x-content-type-options"), "nosniff")

    def test_sub_index(self):
        status, _, body = http_get(self.port, "/sub/")
        self.assertEqual((status, body), (200, b"sub index\n"))

    def test_content_types(self):
        for path, body, ctype in (("/app.js", APP_JS, "text/javascript; charset=utf-8"),
                                  ("/style.css", STYLE, "text/css; charset=utf-8")):
            with self.subTest(path=path):
                status, headers, got = http_get(self.port, path)
                self.assertEqual(status, 200)
                self.assertEqual(got, body)
                self.assertEqual(header(headers, "content-type"), ctype)

    def test_head_request(self):
        status, headers, body = http_get(self.port, "/app.js", method="HEAD")
        self.assertEqual(status, 200)
        self.assertEqual(header(headers, "content-length"), str(len(APP_JS)))
        self.assertEqual(body, b"")

    def test_traversal_404(self):
        for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E/secret.txt",
                     "/sub/../../secret.txt", "/sub/%2e%2e/%2e%2e/secret.txt",
                     "/%2e%2e%2fsecret.txt", "/..%5csecret.txt", "/./index.html",
                     "/%00index.html", "/nothing.html"):
            with self.subTest(path=path):
                status, _, body = http_get(self.port, path)
                self.assertEqual(status, 404)
                self.assertNotIn(SECRET, body)

    def test_symlink_out_404(self):
        for path in ("/leak.txt", "/up/secret.txt"):
            with self.subTest(path=path):
                status, _, body = http_get(self.port, path)
                self.assertEqual(status, 404)
                self.assertNotIn(SECRET, body)

    def test_post_405(self):
        status, headers, _ = http_get(self.port, "/", method="POST",
                                      extra="Content-Length: 0\r\n")
        self.assertEqual(status, 405)
        self.assertEqual(header(headers, "allow"), "GET, HEAD")

    def test_plain_get_of_ws_path_426(self):
        status, headers, _ = http_get(self.port, "/chat")
        self.assertEqual(status, 426)
        self.assertEqual(header(headers, "sec-websocket-version"), "13")

    def test_no_static_dir(self):
        port = self.d.ports[2]
        self.assertEqual(http_get(port, "/")[0], 426)  # "/" is its WebSocket path
        self.assertEqual(http_get(port, "/index.html")[0], 404)
        ws = RawWS(port, "/")
        ws.close()


class HandshakeDeadline(PierdCase):
    """Before the handshakes are done, handshake_timeout_ms alone bounds a
    slow client: packet_timeout_ms (shorter here) is for the session once
    it is open (config/README.md)."""
    LISTENERS = [
        {"plugin": "rec", "framing": "u16_size_id", "transport": "websocket",
         "handshake_timeout_ms": 1500, "ping_interval_ms": 0},
        {"plugin": "rec", "framing": "u16_size_id", "tls": {"cert": "cert.pem", "key": "key.pem"},
         "handshake_timeout_ms": 1500},
        {"plugin": "rec", "framing": "u16_size_id", "transport": "websocket",
         "tls": {"cert": "cert.pem", "key": "key.pem"}, "handshake_timeout_ms": 1500,
         "ping_interval_ms": 0},
    ]
    PLUGINS = ("rec",)
    LIMITS = {"packet_timeout_ms": 300}

    @classmethod
    def prepare(cls, tmp):
        make_cert(tmp.join("cert.pem"), tmp.join("key.pem"), "pier-deadline")
        cls.ca = tmp.join("cert.pem")

    def test_slow_head_within_handshake_timeout(self):
        # The request head in four pieces over 0.75 s: longer than
        # packet_timeout_ms, within handshake_timeout_ms: upgraded.
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        req = upgrade_request(self.d.ports[0], "/", key)
        s = connect(self.d.ports[0])
        try:
            step = len(req) // 4
            for i in range(4):
                if i:
                    time.sleep(0.25)
                s.sendall(req[i * step:] if i == 3 else req[i * step:(i + 1) * step])
            status, headers, rest = read_http(s)
            self.assertEqual(status, 101)
            self.assertEqual(header(headers, "sec-websocket-accept"), accept_for(key))
            ws = RawWS(self.d.ports[0], handshake=False, sock=s)
            ws.buf = rest
            ws.send_frame(OP_BINARY, pkt(1, b"slow but in time"))
            self.assertEqual(ws.recv_message(), (OP_BINARY, pkt(1, b"slow but in time")))
        finally:
            s.close()

    def test_unfinished_handshakes_cut_at_handshake_timeout(self):
        # Three clients at once, each stopping inside its handshake: a
        # request head without its end; a ClientHello's first bytes; TLS
        # done, then half a request head. Each is closed at 1.5 s, not at
        # packet_timeout_ms's 0.3 s, with nothing sent to it.
        mark = self.d.mark()
        start = time.monotonic()
        a = connect(self.d.ports[0])
        a.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        b = connect(self.d.ports[1])
        b.sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))
        c = client_context(self.ca).wrap_socket(connect(self.d.ports[2]),
                                                server_hostname="127.0.0.1")
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        try:
            for name, s in (("ws head", a), ("ClientHello", b), ("wss head", c)):
                with self.subTest(client=name):
                    local = s.getsockname()[1]
                    self.assertEqual(wait_eof(s, T(10)), b"")
                    took = time.monotonic() - start
                    self.assertGreaterEqual(took, 1.4)
                    self.assertLess(took, T(4))
                    self.d.wait_log(r"127\.0\.0\.1:%d: handshake not completed within 1500 ms "
                                    r"\(handshake_timeout_ms\); closing" % local, since=mark)
                    self.assertIsNone(self.d.find_log(r"127\.0\.0\.1:%d: .*packet_timeout_ms"
                                                      % local, since=mark))
        finally:
            for s in (a, b, c):
                s.close()


class CheckHandshakeTimeout(unittest.TestCase):
    def test_only_on_tls_or_websocket(self):
        tmp = TempDir()
        try:
            d = Pierd([{"plugin": "rec", "framing": "raw", "handshake_timeout_ms": 1000},
                       {"plugin": "rec", "framing": "raw", "transport": "websocket",
                        "handshake_timeout_ms": 1000}], plugins=("rec",), tmp=tmp)
            code, out = run_check(d.config_path)
            self.assertEqual(code, 1, out)
            errors = [l.split(" error ", 1)[1] for l in out.splitlines() if " error " in l]
            self.assertEqual(errors, ["%s: listeners[0].handshake_timeout_ms: only for TLS or "
                                      "WebSocket listeners" % d.config_path], out)
        finally:
            tmp.close()


if __name__ == "__main__":
    unittest.main()
