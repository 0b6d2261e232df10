"""Messages on a WebSocket listener: one binary message is one u16_size_id
packet (the chat plugin shares its rooms between TCP and WebSocket
players), the size and cap rules, fragmented messages, text messages, and a
raw listener where message payloads are a byte stream."""
import asyncio
import struct
import time
import unittest

import websockets
import websockets.exceptions

from pierws import (C_CHAT, C_JOIN, OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
                    PACKET_TIMEOUT, PACKET_TOO_LARGE, PACKET_TOO_SMALL, PEER_CLOSED,
                    PROTOCOL_ERROR, REASONS, S_CHAT, S_SYSTEM, PierdCase, RawWS, T, chat_body,
                    frame, joined_sid, pkt, run, unpkt)

MAX = 1024  # limits.max_packet_size


async def ws_connect(port, path="/"):
    return await websockets.connect("ws://127.0.0.1:%d%s" % (port, path), ping_interval=None,
                                    open_timeout=T(10), close_timeout=T(5), max_size=2 ** 20)


async def ws_recv_pkt(ws):
    data = await asyncio.wait_for(ws.recv(), T(10))
    assert isinstance(data, bytes), "a text message from the server: %r" % data
    return unpkt(data)


async def ws_closed_with(ws):
    """Waits for the server to close ws; returns its close code."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), T(10))
    except websockets.exceptions.ConnectionClosed:
        pass
    return ws.close_code


def local_port(ws):
    return ws.local_address[1]


class TcpStream:
    def __init__(self, reader, writer):
        self.r, self.w = reader, writer

    @classmethod
    async def open(cls, port):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    async def send(self, pid, body):
        self.w.write(pkt(pid, body))
        await self.w.drain()

    async def recv(self):
        head = await asyncio.wait_for(self.r.readexactly(4), T(10))
        size, pid = struct.unpack("<HH", head)
        return pid, await asyncio.wait_for(self.r.readexactly(size - 4), T(10))

    def close(self):
        self.w.close()


MISMATCH = "packet size field does not match the message length"
TOO_BIG = "message over max_packet_size"


class Chat(PierdCase):
    LISTENERS = [
        {"plugin": "chat", "framing": "u16_size_id"},
        {"plugin": "chat", "framing": "u16_size_id", "transport": "websocket", "path": "/chat"},
        {"plugin": "rec", "framing": "u16_size_id", "transport": "websocket"},
        {"plugin": "rec", "framing": "raw", "transport": "websocket"},
    ]
    LIMITS = {"max_packet_size": MAX}

    @property
    def tcp_port(self):
        return self.d.ports[0]

    @property
    def chat_port(self):
        return self.d.ports[1]

    @property
    def rec_port(self):
        return self.d.ports[2]

    @property
    def raw_port(self):
        return self.d.ports[3]

    def test_chat_ws_and_tcp_in_one_room(self):
        async def go():
            a = await ws_connect(self.chat_port, "/chat")
            b = await ws_connect(self.chat_port, "/chat")
            c = await TcpStream.open(self.tcp_port)
            try:
                await a.send(pkt(C_JOIN, b"red"))
                pid, body = await ws_recv_pkt(a)
                self.assertEqual(pid, S_SYSTEM)
                sa = joined_sid(body, b"red")

                await b.send(pkt(C_JOIN, b"red"))
                pid, body = await ws_recv_pkt(b)
                sb = joined_sid(body, b"red")
                notice = pkt(S_SYSTEM, b"%d joined red" % sb)
                self.assertEqual(await a.recv(), notice)

                await c.send(C_JOIN, b"red")
                pid, body = await c.recv()
                sc = joined_sid(body, b"red")
                notice = pkt(S_SYSTEM, b"%d joined red" % sc)
                self.assertEqual(await a.recv(), notice)
                self.assertEqual(await b.recv(), notice)

                # Every member gets every chat, each as one binary message
                # (WebSocket) or one packet (TCP), byte for byte.
                for sender, sid, text in ((a, sa, b"hello from a"),
                                          (c, sc, "tcp says h\u00e9llo \u20ac".encode()),
                                          (b, sb, b"b" * 512)):
                    if sender is c:
                        await c.send(C_CHAT, text)
                    else:
                        await sender.send(pkt(C_CHAT, text))
                    want = pkt(S_CHAT, chat_body(sid, text))
                    self.assertEqual(await asyncio.wait_for(a.recv(), T(10)), want)
                    self.assertEqual(await asyncio.wait_for(b.recv(), T(10)), want)
                    self.assertEqual(await c.recv(), unpkt(want))

                # Two packets in one TCP write come out as two messages.
                c.w.write(pkt(C_CHAT, b"one") + pkt(C_CHAT, b"two"))
                for text in (b"one", b"two"):
                    want = pkt(S_CHAT, chat_body(sc, text))
                    self.assertEqual(await asyncio.wait_for(a.recv(), T(10)), want)
                    self.assertEqual(await asyncio.wait_for(b.recv(), T(10)), want)
                    self.assertEqual(await c.recv(), unpkt(want))

                # A refusal goes to the sender alone.
                await a.send(pkt(C_CHAT, b"x" * 513))
                self.assertEqual(await a.recv(), pkt(S_SYSTEM, b"message must be 1..512 bytes"))

                # B leaves: the others hear it.
                await b.close()
                self.assertEqual(b.close_code, 1000)
                left = pkt(S_SYSTEM, b"%d left red" % sb)
                self.assertEqual(await asyncio.wait_for(a.recv(), T(10)), left)
                self.assertEqual(await c.recv(), unpkt(left))
            finally:
                await a.close()
                await b.close()
                c.close()
        run(go())

    def test_text_message_is_a_packet_too(self):
        async def go():
            a = await ws_connect(self.chat_port, "/chat")
            try:
                await a.send(pkt(C_JOIN, "t\u00e9xt".encode()).decode())  # a text message
                pid, body = await ws_recv_pkt(a)
                sa = joined_sid(body, "t\u00e9xt".encode())
                await a.send(pkt(C_CHAT, "caf\u00e9".encode()).decode())
                self.assertEqual(await a.recv(), pkt(S_CHAT, chat_body(sa, "caf\u00e9".encode())))
            finally:
                await a.close()
        run(go())

    def check_refused(self, message, code, reason, text):
        async def go():
            ws = await ws_connect(self.rec_port)
            sid = self.d.rec_sid(local_port(ws))
            await ws.send(message)
            self.assertEqual(await ws_closed_with(ws), code)
            self.assertEqual(ws.close_reason, text)
            return sid
        sid = run(go())
        self.assertEqual(self.d.rec_reason(sid), reason)
        self.assertEqual(self.d.rec_recv_lengths(sid), [])

    def test_size_field_above_length_1002(self):
        self.check_refused(b"\x10\x00\x02\x00hi", 1002, PROTOCOL_ERROR, MISMATCH)

    def test_size_field_below_length_1002(self):
        self.check_refused(b"\x04\x00\x02\x00hi", 1002, PROTOCOL_ERROR, MISMATCH)

    def test_two_packets_in_one_message_1002(self):
        self.check_refused(pkt(1, b"a") + pkt(2, b"b"), 1002, PROTOCOL_ERROR, MISMATCH)

    def test_message_below_header_1002(self):
        # The same reason as a TCP packet below its header.
        self.check_refused(b"\x03\x00\x01", 1002, PACKET_TOO_SMALL,
                           "message shorter than the 4-byte packet header")

    def test_over_max_packet_size_1009(self):
        self.check_refused(pkt(3, b"z" * (MAX - 3)), 1009, PACKET_TOO_LARGE, TOO_BIG)

    def test_at_max_packet_size(self):
        async def go():
            ws = await ws_connect(self.rec_port)
            try:
                p = pkt(3, bytes(i & 0xFF for i in range(MAX - 4)))
                self.assertEqual(len(p), MAX)
                await ws.send(p)
                self.assertEqual(await ws.recv(), p)
            finally:
                await ws.close()
        run(go())

    def test_fragmented_by_websockets(self):
        p = pkt(4, b"0123456789" * 30)

        async def go():
            ws = await ws_connect(self.rec_port)
            try:
                sid = self.d.rec_sid(local_port(ws))
                await ws.send([p[:5], p[5:100], p[100:]])  # one message in 3 frames
                self.assertEqual(await ws.recv(), p)
                return sid
            finally:
                await ws.close()
        sid = run(go())
        self.d.rec_reason(sid)
        self.assertEqual(self.d.rec_recv_lengths(sid), [len(p)])

    def test_fragmented_three_frames(self):
        p = pkt(4, b"abcdefghij" * 10)
        ws = RawWS(self.rec_port)
        try:
            sid = self.d.rec_sid(ws.local_port)
            ws.send_frame(OP_BINARY, p[:3], fin=False)  # the header itself split
            ws.send_frame(OP_CONT, p[3:60], fin=False)
            ws.send_frame(OP_CONT, p[60:], fin=True)
            self.assertEqual(ws.recv_message(), (OP_BINARY, p))
            ws.send_frame(8, b"\x03\xe8")
            ws.expect_close(1000)
        finally:
            ws.close()
        self.assertEqual(self.d.rec_reason(sid), PEER_CLOSED)
        self.assertEqual(self.d.rec_recv_lengths(sid), [len(p)])

    def test_control_frames_between_fragments(self):
        p = pkt(6, b"fragmented around a ping")
        ws = RawWS(self.rec_port)
        try:
            sid = self.d.rec_sid(ws.local_port)
            ws.send_frame(OP_BINARY, p[:10], fin=False)
            ws.send_frame(OP_PING, b"are you there")
            f = ws.recv_frame()
            self.assertEqual((f.fin, f.opcode, f.payload), (True, OP_PONG, b"are you there"))
            ws.send_frame(OP_PONG, b"unasked")  # an unsolicited pong is fine too
            ws.send_frame(OP_CONT, p[10:20], fin=False)
            ws.send_frame(OP_PING, b"")
            f = ws.recv_frame()
            self.assertEqual((f.opcode, f.payload), (OP_PONG, b""))
            ws.send_frame(OP_CONT, p[20:], fin=True)
            self.assertEqual(ws.recv_message(), (OP_BINARY, p))
        finally:
            ws.close()
        self.d.rec_reason(sid)
        self.assertEqual(self.d.rec_recv_lengths(sid), [len(p)])

    def test_fragmented_over_cap_1009(self):
        ws = RawWS(self.rec_port)
        try:
            sid = self.d.rec_sid(ws.local_port)
            p = pkt(5, b"q" * 1196)  # 1200 bytes in three frames of 400
            ws.send_frame(OP_BINARY, p[:400], fin=False)
            ws.send_frame(OP_CONT, p[400:800], fin=False)
            ws.send_frame(OP_CONT, p[800:], fin=True)
            ws.expect_close(1009, TOO_BIG)
        finally:
            ws.close()
        self.assertEqual(self.d.rec_reason(sid), PACKET_TOO_LARGE)
        self.assertEqual(self.d.rec_recv_lengths(sid), [])

    def test_frame_over_cap_1009_early(self):
        # A frame that announces 1 MiB is refused with its first bytes, not
        # once the megabyte (which never comes) is in.
        ws = RawWS(self.rec_port)
        try:
            sid = self.d.rec_sid(ws.local_port)
            ws.send(bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 20) + b"mask" + b"x" * 100)
            ws.expect_close(1009, TOO_BIG)
        finally:
            ws.close()
        self.assertEqual(self.d.rec_reason(sid), PACKET_TOO_LARGE)

    def test_text_valid_utf8(self):
        p = pkt(8, "h\u00e9llo \u20ac \U0001F600".encode())
        ws = RawWS(self.rec_port)
        try:
            ws.send_frame(OP_TEXT, p)
            self.assertEqual(ws.recv_message(), (OP_BINARY, p))  # server messages are binary
            # A character split across fragments is still valid.
            cut = p.index("\u20ac".encode()) + 1
            ws.send_frame(OP_TEXT, p[:cut], fin=False)
            ws.send_frame(OP_CONT, p[cut:cut + 1], fin=False)
            ws.send_frame(OP_CONT, p[cut + 1:], fin=True)
            self.assertEqual(ws.recv_message(), (OP_BINARY, p))
        finally:
            ws.close()

    # -- raw framing --

    def test_raw_listener_byte_stream(self):
        parts = [b"abc", b"defgh", b"\x00\x01\x02", "t\u00e9xt".encode()]
        sent = b"".join(parts)

        async def go():
            ws = await ws_connect(self.raw_port)
            try:
                sid = self.d.rec_sid(local_port(ws))
                for part in parts[:3]:
                    await ws.send(part)
                await ws.send(parts[3].decode())  # a text message's bytes too
                await ws.send([b"fr", b"ag"])    # and a fragmented one
                want = sent + b"frag"
                got = b""
                while len(got) < len(want):
                    m = await asyncio.wait_for(ws.recv(), T(10))
                    self.assertIsInstance(m, bytes)
                    got += m
                self.assertEqual(got, want)
                return sid
            finally:
                await ws.close()
        sid = run(go())
        self.assertEqual(self.d.rec_reason(sid), PEER_CLOSED)
        self.assertEqual(sum(self.d.rec_recv_lengths(sid)), len(sent) + 4)

    def test_raw_listener_any_bytes(self):
        # No size rule on raw: a message that would be a bad packet is data.
        async def go():
            ws = await ws_connect(self.raw_port)
            try:
                await ws.send(b"\x10\x00\x02\x00hi")
                self.assertEqual(await asyncio.wait_for(ws.recv(), T(10)), b"\x10\x00\x02\x00hi")
            finally:
                await ws.close()
        run(go())

    def test_raw_listener_cap_1009(self):
        async def go():
            ws = await ws_connect(self.raw_port)
            sid = self.d.rec_sid(local_port(ws))
            await ws.send(b"r" * (MAX + 1))
            self.assertEqual(await ws_closed_with(ws), 1009)
            self.assertEqual(ws.close_reason, TOO_BIG)
            return sid
        sid = run(go())
        self.assertEqual(self.d.rec_reason(sid), PACKET_TOO_LARGE)


class PartialMessage(PierdCase):
    """limits.packet_timeout_ms on a WebSocket listener: a message begun
    and not finished in time (config/README.md: 1008)."""
    LISTENERS = [{"plugin": "rec", "framing": "u16_size_id", "transport": "websocket",
                  "ping_interval_ms": 0}]
    PLUGINS = ("rec",)
    LIMITS = {"max_packet_size": MAX, "packet_timeout_ms": 500}

    def expect_timeout(self, data, payload, header=0):
        """data, with payload bytes of an unfinished message (and header
        bytes of a frame not yet whole), is closed with 1008 after
        packet_timeout_ms; the log line says how much was held: the payload,
        and at most the unfinished frame's header besides."""
        mark = self.d.mark()
        start = time.monotonic()
        ws = RawWS(self.d.ports[0])
        try:
            sid = self.d.rec_sid(ws.local_port)
            ws.send(data)
            ws.expect_close(1008, REASONS[PACKET_TIMEOUT], timeout=T(5))
        finally:
            ws.close()
        took = time.monotonic() - start
        self.assertGreaterEqual(took, 0.45)
        self.assertLess(took, T(3))
        self.assertEqual(self.d.rec_reason(sid), PACKET_TIMEOUT)
        self.assertEqual(self.d.rec_recv_lengths(sid), [])
        held = int(self.d.wait_log(
            r"session %s 127\.0\.0\.1:%d: (\d+) of a packet's bytes held for \d+ ms "
            r"\(packet_timeout_ms\); closing$" % (sid, ws.local_port), since=mark).group(1))
        self.assertTrue(max(payload, 1) <= held <= payload + header,
                        "%d bytes held logged; %d sent: %d of payload, %d of an unfinished "
                        "frame's header" % (held, len(data), payload, header))

    def test_fragment_without_the_rest(self):
        self.expect_timeout(frame(OP_BINARY, pkt(1, b"abcdef")[:5], fin=False), 5)

    def test_frame_cut_short(self):
        self.expect_timeout(frame(OP_BINARY, pkt(1, b"abcdef"))[:-2], 8, 6)

    def test_header_of_a_frame_over_cap(self):
        # No payload byte yet: held like any partial message, then closed.
        self.expect_timeout(bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 20) + b"mask", 0, 14)

    def test_fragments_then_a_frame_cut_short(self):
        # One whole fragment (10 payload bytes), then 6 of the next's 10.
        p = pkt(1, b"0123456789abcdef")
        self.expect_timeout(frame(OP_BINARY, p[:10], fin=False) +
                            frame(OP_CONT, p[10:], fin=True)[:12], 16, 6)

    def test_complete_messages_are_not_timed(self):
        ws = RawWS(self.d.ports[0])
        try:
            sid = self.d.rec_sid(ws.local_port)
            ws.send_frame(OP_BINARY, pkt(1, b"one"))
            self.assertEqual(ws.recv_message(), (OP_BINARY, pkt(1, b"one")))
            time.sleep(1)  # twice the packet timeout, with no message begun
            ws.send_frame(OP_BINARY, pkt(1, b"two"))
            self.assertEqual(ws.recv_message(), (OP_BINARY, pkt(1, b"two")))
        finally:
            ws.close()
        self.d.rec_reason(sid)


if __name__ == "__main__":
    unittest.main()
