"""Malformed frames from a raw socket after a valid handshake: each gets a
close frame with the code RFC 6455 asks for, then the end of the
connection, and the plugin hears why (on_disconnected's reason)."""
import struct
import unittest

from pierws import (BAD_UTF8, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
                    PROTOCOL_ERROR, REASONS, PierdCase, RawWS, close_payload, frame, pkt)


UNMASKED = "unmasked frame from the client"
BAD_HEADER = ("bad frame header (a control frame over 125 bytes or fragmented, or a length "
              "not in its shortest form)")
BAD_TEXT = "invalid UTF-8 in a text message"
CUT_TEXT = "invalid UTF-8: a text message ends inside a character"


class MalformedFrames(PierdCase):
    LISTENERS = [{"plugin": "rec", "framing": "u16_size_id", "transport": "websocket"}]
    PLUGINS = ("rec",)

    def violate(self, code, reason, text, *frames, raw=b""):
        """A new connection sends frames (then raw bytes); it must get a close
        frame with code and the reason text, then EOF; the plugin must hear
        reason."""
        ws = RawWS(self.d.ports[0])
        try:
            sid = self.d.rec_sid(ws.local_port)
            for f in frames:
                ws.send(f)
            if raw:
                ws.send(raw)
            ws.expect_close(code, text)
        finally:
            ws.close()
        got = self.d.rec_reason(sid)
        self.assertEqual(got, reason, "reason %d (%s), expected %d (%s)" %
                         (got, REASONS.get(got), reason, REASONS[reason]))
        self.assertEqual(self.d.rec_recv_lengths(sid), [])
        return sid

    def test_unmasked_frame(self):
        self.violate(1002, PROTOCOL_ERROR, UNMASKED, frame(OP_BINARY, pkt(1, b"x"), mask=False))

    def test_unmasked_control_frame(self):
        self.violate(1002, PROTOCOL_ERROR, UNMASKED, frame(OP_PING, b"p", mask=False))

    def test_rsv_bits(self):
        for rsv in (4, 2, 1, 7):
            with self.subTest(rsv=rsv):
                self.violate(1002, PROTOCOL_ERROR, "reserved bits set (no extension was agreed)",
                             frame(OP_BINARY, pkt(1, b"x"), rsv=rsv))

    def test_reserved_opcodes(self):
        for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF):
            with self.subTest(opcode=op):
                self.violate(1002, PROTOCOL_ERROR, "reserved opcode", frame(op, b"?"))

    def test_ping_payload_126(self):
        self.violate(1002, PROTOCOL_ERROR, BAD_HEADER, frame(OP_PING, b"p" * 126))

    def test_close_payload_126(self):
        self.violate(1002, PROTOCOL_ERROR, BAD_HEADER,
                     frame(OP_CLOSE, close_payload(1000, b"r" * 124)))

    def test_fragmented_ping(self):
        self.violate(1002, PROTOCOL_ERROR, BAD_HEADER, frame(OP_PING, b"half", fin=False))

    def test_fragmented_pong(self):
        self.violate(1002, PROTOCOL_ERROR, BAD_HEADER, frame(OP_PONG, b"half", fin=False))

    def test_continuation_without_message(self):
        self.violate(1002, PROTOCOL_ERROR, "continuation frame with no message",
                     frame(OP_CONT, pkt(1, b"x")))

    def test_continuation_after_complete_message(self):
        p = pkt(1, b"whole")
        ws = RawWS(self.d.ports[0])
        try:
            sid = self.d.rec_sid(ws.local_port)
            ws.send_frame(OP_BINARY, p)
            self.assertEqual(ws.recv_message(), (OP_BINARY, p))
            ws.send_frame(OP_CONT, b"more")
            ws.expect_close(1002, "continuation frame with no message")
        finally:
            ws.close()
        self.assertEqual(self.d.rec_reason(sid), PROTOCOL_ERROR)

    def test_data_frame_inside_fragmented_message(self):
        for op in (OP_BINARY, OP_TEXT):
            with self.subTest(opcode=op):
                self.violate(1002, PROTOCOL_ERROR, "new message inside a fragmented one",
                             frame(OP_BINARY, b"\x0a\x00", fin=False),
                             frame(op, b"\x01\x00abcd"))

    def test_invalid_utf8_text(self):
        for bad in (b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"):
            with self.subTest(bytes=bad):
                self.violate(1007, BAD_UTF8, BAD_TEXT, frame(OP_TEXT, pkt(1, bad + b"ok")))

    def test_utf8_cut_at_the_end(self):
        self.violate(1007, BAD_UTF8, CUT_TEXT, frame(OP_TEXT, pkt(1, b"ok\xe2\x82")))

    def test_invalid_utf8_across_fragments(self):
        # Valid so far at the end of the first fragment, invalid with the next.
        p = pkt(1, b"ok\xe2\x82\x28")
        self.violate(1007, BAD_UTF8, BAD_TEXT, frame(OP_TEXT, p[:-1], fin=False),
                     frame(OP_CONT, p[-1:], fin=True))

    def test_utf8_cut_at_the_last_fragment(self):
        # A sequence still open when the message ends.
        p = pkt(1, b"ok\xe2\x82")
        self.violate(1007, BAD_UTF8, CUT_TEXT, frame(OP_TEXT, p, fin=False),
                     frame(OP_CONT, b"", fin=True))

    def test_valid_utf8_text(self):
        p = pkt(1, "v\u00e4lid \u6f22\u5b57 \U0001F3B2".encode())
        ws = RawWS(self.d.ports[0])
        try:
            ws.send_frame(OP_TEXT, p)
            self.assertEqual(ws.recv_message(), (OP_BINARY, p))
        finally:
            ws.close()

    def test_close_one_byte_payload(self):
        self.violate(1002, PROTOCOL_ERROR, "close frame with a 1-byte payload",
                     frame(OP_CLOSE, b"\x03"))

    def test_close_reserved_codes(self):
        # Codes a peer may never send (RFC 6455 7.4.1/7.4.2).
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999):
            with self.subTest(code=code):
                self.violate(1002, PROTOCOL_ERROR, "invalid close code",
                             frame(OP_CLOSE, close_payload(code)))

    def test_close_reason_invalid_utf8(self):
        self.violate(1007, BAD_UTF8, "invalid UTF-8 in the close reason",
                     frame(OP_CLOSE, close_payload(1000, b"bad \xff")))

    def test_length_with_top_bit(self):
        # A 64-bit length whose most significant bit is set.
        self.violate(1002, PROTOCOL_ERROR, BAD_HEADER,
                     raw=bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 63 | 4) + b"mask")

    def test_length_not_shortest(self):
        # 5 bytes announced in the 16-bit form.
        self.violate(1002, PROTOCOL_ERROR, BAD_HEADER,
                     raw=bytes([0x82, 0xFE]) + struct.pack("!H", 5) + b"\0\0\0\0" + pkt(1, b"x"))


if __name__ == "__main__":
    unittest.main()
