"""Payloads no pierd would send, put on the bus by hand (the NATS text
protocol over a socket): on every subject the chat plugin was seen using,
on room subjects nobody uses, and on pierd's own presence subject. Every
node keeps serving and its players keep chatting across nodes; what the
chat plugin cannot parse never reaches a player and is logged."""
import random
import re
import time
import unittest

from piercluster import (S_CHAT, S_CHAT_REMOTE, S_SYSTEM, ClusterTest, T, chat_from,
                         joined_notice, nats_server, start_nodes, wait_for)

# The chat plugin's log line for a bus payload it refuses.
REJECTED = r'\[chat\] bus: ignored (\d+ bytes on "[^"]*"|a message from node "[^"]*"): '


def garbage(seed):
    """Payloads that are nothing at all: empty, NULs, 0xff runs, bytes that
    are not UTF-8, random bytes of several sizes."""
    rnd = random.Random(seed)
    out = [b"", b"\0", b"\0" * 64, b"\xff" * 300, b"\xc3\x28" * 10, b"{", b"[]", b"null",
           b'{"room":', b"\x01", b"\xff\xff\xff\xff\xff\xff\xff\xff"]
    for n in (1, 2, 3, 5, 8, 13, 40, 200, 1000, 60000):
        out.append(bytes(rnd.randrange(256) for _ in range(n)))
    return out


def mutations(real, seed):
    """Variants of a payload a node did send: every prefix (up to 80 of
    them), extra bytes after it, single bytes changed."""
    rnd = random.Random(seed)
    out = [real[:i] for i in range(min(len(real), 80))]
    out += [real + b"\0", real + b"\xff" * 20, real * 2]
    for _ in range(40):
        if not real:
            break
        b = bytearray(real)
        i = rnd.randrange(len(b))
        b[i] = rnd.choice((0, 0xff, 0x7f, 0x80, b[i] ^ 1))
        out.append(bytes(b))
    return out


class Malformed(ClusterTest):
    def setUp(self):
        self.nats = nats_server(self.addCleanup)
        # Watch everything from before the nodes start: their first
        # exchanges (a snapshot of the rooms, say) come at start.
        self.watch = self.nats_client(self.nats.port)
        self.watch.sub(">")
        self.watch.flush()
        self.nodes = start_nodes(self.addCleanup, [self.nats.url])
        a, b, c = self.nodes
        self.room = b"mal"
        self.players = []
        for node in (a, b, c):
            p = self.player(node, self.room)
            for m in self.players:
                m.notice(joined_notice(p, m, self.room))
            self.players.append(p)
        for p in self.players:
            p.chat(b"hello from " + p.node.name.encode())
            for m in self.players:
                m.expect(*chat_from(p, m, b"hello from " + p.node.name.encode()))
        self.watch.flush()

    def chat_subjects(self):
        """{subject: [payloads]} the nodes published under pier.chat."""
        seen = {}
        for subject, reply, payload in self.watch.seen():
            if subject.startswith("pier.chat."):
                seen.setdefault(subject, []).append(payload)
        return seen

    def still_chatting(self):
        """Every node serves and its player reaches the others."""
        for n in self.nodes:
            n.assert_alive()
        for i, p in enumerate(self.players):
            text = b"after the garbage %d" % i
            p.chat(text)
            for m in self.players:
                m.expect(*chat_from(p, m, text))
        for n in self.nodes:
            n.ctl("status")

    def drain(self, p, seconds=0.5):
        """Whatever p got meanwhile: only whole, well-formed chat packets."""
        got = []
        while True:
            try:
                pid, body = p.recv(seconds)
            except OSError:
                return got
            self.assertIn(pid, (S_CHAT, S_CHAT_REMOTE, S_SYSTEM), body)
            if pid == S_CHAT_REMOTE:
                self.assertGreaterEqual(len(body), 1 + body[0] + 8, body)
            got.append((pid, body))

    def test_garbage_on_chat_subjects(self):
        subjects = sorted(self.chat_subjects())
        self.assertTrue(subjects, "the nodes published nothing under pier.chat.")
        # Room subjects nobody is in, and the shapes around them.
        targets = subjects + ["pier.chat.room.nobody", "pier.chat.room.x.y", "pier.chat.room",
                              "pier.chat.x", "pier.chat.snapshot"]
        marks = [n.mark() for n in self.nodes]
        for k, subject in enumerate(targets):
            for payload in garbage(k):
                self.watch.pub(subject, payload)
                self.watch.pub(subject, payload, reply="_INBOX.pier-test.%d" % k)
        self.watch.flush()
        for p in self.players:
            p.quiet(0.5)
        for n, m in zip(self.nodes, marks):
            wait_for("%s logs a refused bus payload" % n.name,
                     lambda n=n, m=m: n.find_log(REJECTED, since=m), T(5))
        self.still_chatting()
        for p in self.players:
            p.quiet(0.2)

    def test_damaged_real_payloads(self):
        seen = self.chat_subjects()
        self.assertTrue(seen, "the nodes published nothing under pier.chat.")
        for k, (subject, payloads) in enumerate(sorted(seen.items())):
            for real in payloads[:3]:
                for payload in mutations(real, k):
                    self.watch.pub(subject, payload)
        self.watch.flush()
        # A damaged payload may still be a valid one (a shorter text): the
        # players may get it, as a well-formed packet.
        for p in self.players:
            self.drain(p)
        self.still_chatting()

    def test_garbage_presence(self):
        marks = [n.mark() for n in self.nodes]
        for k, payload in enumerate(garbage(99) + [
                b'{"node":"", "id":"x", "state":"up", "sessions":1}',
                b'{"node":"' + b"n" * 300 + b'", "id":"0123456789abcdef", "state":"up",'
                b' "sessions":1}',
                b'{"node":"eu-9", "id":"0123456789abcdef", "state":"sideways", "sessions":1}',
                b'{"node":"bad name!", "id":"0123456789abcdef", "state":"up", "sessions":1}',
                b'{"node":"eu-9", "id":"0123456789abcdef", "state":"up", "sessions":1']):
            self.watch.pub("pier.$pier.presence", payload)
            self.watch.pub("pier.$pier.claim.eu-1", payload, reply="_INBOX.pier-test.c%d" % k)
        self.watch.flush()
        for p in self.players:
            p.quiet(0.3)
        for n, m in zip(self.nodes, marks):
            self.assertEqual(sorted(e["node"] for e in n.cluster_json()["nodes"]),
                             sorted(o.name for o in self.nodes))
            self.assertEqual(n.count(r"cluster: node .* (is up|left|is gone)", since=m), 0,
                             n.name)
        self.still_chatting()

    def test_presence_with_wrong_types(self):
        # Well-formed JSON whose values are not what a node sends: a
        # negative or textual session count, a NUL after the object.
        marks = [n.mark() for n in self.nodes]
        for i, payload in enumerate([
                b'{"node":"eu-91", "id":"0123456789abcdef", "state":"up", "sessions":-1}',
                b'{"node":"eu-92", "id":"0123456789abcdef", "state":"up", "sessions":"x"}',
                b'{"node":"eu-93", "id":"0123456789abcdef", "state":"up", "sessions":1}\0']):
            self.watch.pub("pier.$pier.presence", payload)
        self.watch.flush()
        time.sleep(0.3)
        for n, m in zip(self.nodes, marks):
            self.assertEqual(sorted(e["node"] for e in n.cluster_json()["nodes"]),
                             sorted(o.name for o in self.nodes), n.name)
            self.assertEqual(n.count(r"cluster: node .* is up", since=m), 0, n.name)
        self.still_chatting()


if __name__ == "__main__":
    unittest.main()
