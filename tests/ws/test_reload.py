"""A hot reload of the chat plugin while WebSocket (ws:// and wss://) and
TCP players are in a room: the rooms are handed over, nobody reconnects,
and everybody keeps chatting."""
import asyncio
import unittest

import websockets

from pierws import (C_CHAT, C_JOIN, S_CHAT, S_SYSTEM, PierdCase, TcpChat, T, chat_body,
                    client_context, joined_sid, make_cert, pkt, run, unpkt)


class Reload(PierdCase):
    LISTENERS = [
        {"plugin": "chat", "framing": "u16_size_id"},
        {"plugin": "chat", "framing": "u16_size_id", "transport": "websocket", "path": "/chat"},
        {"plugin": "chat", "framing": "u16_size_id", "transport": "websocket", "path": "/chat",
         "tls": {"cert": "cert.pem", "key": "key.pem"}},
    ]
    PLUGINS = ("chat",)

    @classmethod
    def prepare(cls, tmp):
        make_cert(tmp.join("cert.pem"), tmp.join("key.pem"), "pier-reload")
        cls.ca = tmp.join("cert.pem")

    def test_reload_keeps_ws_and_wss_sessions(self):
        tcp_port, ws_port, wss_port = self.d.ports

        async def go():
            opts = dict(ping_interval=None, open_timeout=T(10), close_timeout=T(5))
            a = await websockets.connect("ws://127.0.0.1:%d/chat" % ws_port, **opts)
            b = await websockets.connect("wss://127.0.0.1:%d/chat" % wss_port,
                                         ssl=client_context(self.ca), **opts)
            c = TcpChat(tcp_port)
            loop = asyncio.get_running_loop()

            async def recv(ws):
                return unpkt(await asyncio.wait_for(ws.recv(), T(10)))

            async def everyone(want):
                self.assertEqual(await recv(a), want)
                self.assertEqual(await recv(b), want)
                self.assertEqual(await loop.run_in_executor(None, c.recv), want)

            try:
                await a.send(pkt(C_JOIN, b"lobby"))
                sa = joined_sid((await recv(a))[1], b"lobby")
                await b.send(pkt(C_JOIN, b"lobby"))
                sb = joined_sid((await recv(b))[1], b"lobby")
                self.assertEqual(await recv(a), (S_SYSTEM, b"%d joined lobby" % sb))
                sc = c.join(b"lobby")
                self.assertEqual(await recv(a), (S_SYSTEM, b"%d joined lobby" % sc))
                self.assertEqual(await recv(b), (S_SYSTEM, b"%d joined lobby" % sc))
                await a.send(pkt(C_CHAT, b"before"))
                await everyone((S_CHAT, chat_body(sa, b"before")))

                for generation in (2, 3):
                    mark = self.d.mark()
                    rc, out, err = await loop.run_in_executor(None, self.d.pierctl,
                                                              "reload", "chat")
                    self.assertEqual(rc, 0, err)
                    self.assertRegex(out, r"reloaded chat: generation %d," % generation)
                    self.d.wait_log(r"reloaded chat: generation %d," % generation, since=mark)
                    for ws, sid in ((a, sa), (b, sb)):
                        text = b"after reload %d from %d" % (generation, sid)
                        await ws.send(pkt(C_CHAT, text))
                        await everyone((S_CHAT, chat_body(sid, text)))
                    c.send(C_CHAT, b"tcp after %d" % generation)
                    await everyone((S_CHAT, chat_body(sc, b"tcp after %d" % generation)))
                self.assertIsNone(a.close_code)
                self.assertIsNone(b.close_code)
                # The room itself came across: leaving is heard.
                await b.close()
                self.assertEqual(await recv(a), (S_SYSTEM, b"%d left lobby" % sb))
            finally:
                await a.close()
                await b.close()
                c.close()
        run(go())


if __name__ == "__main__":
    unittest.main()
