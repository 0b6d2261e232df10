"""A broadcast shares one framed buffer among its recipients: WebSocket
clients (ws:// and wss://) get one binary message with the length in its
shortest form -- 7, 16 or 64 bits, across the boundaries -- and TCP and
TLS clients of the same plugin get the bytes alone, no frame header."""
import unittest

from pierws import (OP_BINARY, ST_BROADCAST, PierdCase, RawWS, T, client_context, connect,
                    make_cert, pattern, recv_exact, stall_pkt, unpkt)

TLS_FILES = {"cert": "cert.pem", "key": "key.pem"}
SIZES = (1, 125, 126, 127, 65409, 65410, 65535, 65536, 65537, 200000, 1000000)


class Broadcast(PierdCase):
    LISTENERS = [
        {"plugin": "stall", "framing": "u16_size_id"},
        {"plugin": "stall", "framing": "u16_size_id", "tls": TLS_FILES},
        {"plugin": "stall", "framing": "u16_size_id", "transport": "websocket",
         "ping_interval_ms": 0},
        {"plugin": "stall", "framing": "u16_size_id", "transport": "websocket", "tls": TLS_FILES,
         "ping_interval_ms": 0},
    ]
    PLUGINS = ("stall",)
    LIMITS = {"max_send_queue": 4 * 1024 * 1024}

    @classmethod
    def prepare(cls, tmp):
        make_cert(tmp.join("cert.pem"), tmp.join("key.pem"), "pier-broadcast")
        cls.ca = tmp.join("cert.pem")

    def test_sizes_to_every_transport(self):
        tcp = connect(self.d.ports[0])
        tls = client_context(self.ca).wrap_socket(connect(self.d.ports[1]),
                                                  server_hostname="127.0.0.1")
        ws = RawWS(self.d.ports[2])
        wss = RawWS(self.d.ports[3], ctx=client_context(self.ca))
        streams = (("tcp", tcp), ("tls", tls))
        messages = (("ws", ws), ("wss", wss))
        try:
            for name, s in streams:  # the greeting
                self.assertEqual(unpkt(recv_exact(s, 5))[0], 1, name)
            for name, c in messages:
                self.assertEqual(unpkt(c.recv_message()[1])[0], 1, name)
            for n in SIZES:
                want = pattern(n)
                tcp.sendall(stall_pkt(ST_BROADCAST, n))
                for name, s in streams:
                    with self.subTest(n=n, to=name):
                        s.settimeout(T(20))
                        self.assertTrue(recv_exact(s, n) == want, "bytes differ")
                for name, c in messages:
                    with self.subTest(n=n, to=name):
                        f = c.recv_frame(T(20))
                        self.assertEqual((f.fin, f.opcode, len(f.payload)), (True, OP_BINARY, n))
                        self.assertTrue(f.shortest, "header %r for %d bytes" % (f.head, n))
                        self.assertTrue(f.payload == want, "payload differs")
                self.d.wait_rec(r"broadcast %d 4" % n)
            # Nothing more came to anyone.
            for name, s in streams:
                s.settimeout(0.2)
                with self.assertRaises(OSError, msg=name):
                    s.recv(1)
            for name, c in messages:
                self.assertEqual(c.buf, b"", name)
        finally:
            for s in (tcp, tls):
                s.close()
            ws.close()
            wss.close()


if __name__ == "__main__":
    unittest.main()
