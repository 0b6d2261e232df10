"""Three pierd nodes on one nats-server share their chat rooms: what a
player on one node says reaches the room's members on every node, byte for
byte (S_CHAT from its own node, S_CHAT_REMOTE from the others), joins and
leaves are announced everywhere, one sender's messages keep their order,
and the operator sees every node in `pierctl cluster`."""
import re
import unittest

from piercluster import (C_CHAT, C_JOIN, NODE_TIMEOUT_MS, S_CHAT, S_CHAT_REMOTE, ClusterTest,
                         T, chat_from, joined_notice, left_notice, nats_server, pkt,
                         start_nodes, wait_for)


class SharedRoom(ClusterTest):
    @classmethod
    def setUpClass(cls):
        cls.nats = nats_server(cls.addClassCleanup)
        # eu-3 runs the plugin with "session" threading, the others "serial".
        cls.nodes = start_nodes(cls.addClassCleanup, [cls.nats.url],
                                threading={"eu-3": "session"})
        cls.a, cls.b, cls.c = cls.nodes

    def everyone(self, players, pid_body_of):
        """Each player's next packet is pid_body_of(player)."""
        for p in players:
            p.expect(*pid_body_of(p))

    def test_messages_and_notices_cross_nodes(self):
        room = b"lobby"
        a1 = self.player(self.a, room)
        b1 = self.player(self.b, room)
        a1.notice(joined_notice(b1, a1, room))
        self.assertEqual(joined_notice(b1, a1, room), b"eu-2/%d joined lobby" % b1.sid)
        c1 = self.player(self.c, room)
        for p in (a1, b1):
            p.notice(b"eu-3/%d joined lobby" % c1.sid)
        a2 = self.player(self.a, room)
        a1.notice(b"%d joined lobby" % a2.sid)
        for p in (b1, c1):
            p.notice(b"eu-1/%d joined lobby" % a2.sid)
        members = (a1, a2, b1, c1)
        # Someone in another room hears none of it.
        b2 = self.player(self.b, b"elsewhere")

        a1.chat(b"hello from a")
        self.everyone(members, lambda p: chat_from(a1, p, b"hello from a"))
        # The exact bytes, once by hand: u8 node_len | node | u64 sid LE | text.
        self.assertEqual(chat_from(a1, b1, b"hi"),
                         (S_CHAT_REMOTE, b"\x04eu-1" + a1.sid.to_bytes(8, "little") + b"hi"))
        self.assertEqual(chat_from(a1, a2, b"hi"), (S_CHAT, a1.sid.to_bytes(8, "little") + b"hi"))
        b1.chat(b"hello from b")
        self.everyone(members, lambda p: chat_from(b1, p, b"hello from b"))
        c1.chat("ünïcode from c".encode())
        self.everyone(members, lambda p: chat_from(c1, p, "ünïcode from c".encode()))
        big = bytes(0x21 + i % 94 for i in range(512))  # the longest text
        c1.chat(big)
        self.everyone(members, lambda p: chat_from(c1, p, big))

        # a2 moves to another room: lobby hears it leave, elsewhere join.
        a2.send(C_JOIN, b"elsewhere")
        for p in (a1, b1, c1):
            p.notice(left_notice(a2, p, room))
        self.assertEqual(left_notice(a2, b1, room), b"eu-1/%d left lobby" % a2.sid)
        b2.notice(b"eu-1/%d joined elsewhere" % a2.sid)
        a2.notice(b"%d joined elsewhere" % a2.sid)
        b2.chat(b"in elsewhere")
        a2.expect(*chat_from(b2, a2, b"in elsewhere"))
        b2.expect(*chat_from(b2, b2, b"in elsewhere"))

        # A disconnect is a leave, on every node.
        c1.close()
        for p in (a1, b1):
            p.notice(b"eu-3/%d left lobby" % c1.sid)
        b1.close()
        a1.notice(b"eu-2/%d left lobby" % b1.sid)
        a1.chat(b"alone now")
        a1.expect(*chat_from(a1, a1, b"alone now"))
        for p in (a1, a2, b2):
            p.quiet()

    def test_refusals_stay_local(self):
        room = b"refusals"
        a1 = self.player(self.a, room)
        b1 = self.player(self.b, room)
        a1.notice(joined_notice(b1, a1, room))
        b1.send(C_JOIN, room)
        b1.notice(b"already in refusals")
        b1.chat(b"")
        b1.notice(b"message must be 1..512 bytes")
        b1.chat(b"\xff\xfe")
        b1.notice(b"message must be valid utf-8")
        b1.chat(b"x" * 513)
        b1.notice(b"message must be 1..512 bytes")
        fresh = self.player(self.c)
        fresh.chat(b"nobody")
        fresh.notice(b"join a room first")
        for p in (a1, b1, fresh):
            p.quiet()

    def test_one_sender_keeps_its_order(self):
        room = b"order"
        n = 200
        a1 = self.player(self.a, room)
        a2 = self.player(self.a, room)
        a1.notice(joined_notice(a2, a1, room))
        b1 = self.player(self.b, room)
        for p in (a1, a2):
            p.notice(joined_notice(b1, p, room))
        c1 = self.player(self.c, room)
        for p in (a1, a2, b1):
            p.notice(joined_notice(c1, p, room))
        members = (a1, a2, b1, c1)
        senders = (a1, b1, c1)
        # 200 messages each from a1, b1 and c1 at once, every one in one write.
        for s in senders:
            s.sock.sendall(b"".join(pkt(C_CHAT, b"%s #%03d" % (s.node.name.encode(), i))
                                    for i in range(n)))
        for p in members:
            got = {s: [] for s in senders}
            for _ in range(n * len(senders)):
                pid, body = p.recv(T(20))
                for s in senders:
                    if (pid, body[:len(chat_from(s, p, b"")[1])]) == chat_from(s, p, b""):
                        got[s].append(body[len(chat_from(s, p, b"")[1]):])
                        break
                else:
                    self.fail("%s player got %r" % (p.node.name, (pid, body)))
            for s in senders:
                self.assertEqual(got[s], [b"%s #%03d" % (s.node.name.encode(), i)
                                          for i in range(n)],
                                 "%s's messages on %s" % (s.node.name, p.node.name))
            p.quiet(0.2)

    def test_room_names_are_bytes_everywhere(self):
        # Names that are not NATS tokens (dots, blanks, wildcards) stay
        # distinct rooms across nodes.
        names = [b"x", b"x.y", b"x.*", b"*", b">", b"a b", b"x.>", "ünï".encode(),
                 b"\\", b"$pier"]
        pairs = []
        for name in names:
            a = self.player(self.a, name)
            b = self.player(self.c, name)
            a.notice(joined_notice(b, a, name))
            pairs.append((name, a, b))
        for name, a, b in pairs:
            a.chat(b"to " + name)
            b.expect(*chat_from(a, b, b"to " + name))
            a.expect(*chat_from(a, a, b"to " + name))
            b.chat(b"back to " + name)
            a.expect(*chat_from(b, a, b"back to " + name))
            b.expect(*chat_from(b, b, b"back to " + name))
        for name, a, b in pairs:
            a.quiet(0.05)
            b.quiet(0.05)

    def test_presence(self):
        counts = {"eu-1": 1, "eu-2": 2, "eu-3": 3}
        for node in self.nodes:
            for _ in range(counts[node.name]):
                self.player(node)

        # Sessions of earlier cases may still be closing: wait for the counts.
        def settled():
            for node in self.nodes:
                rows = table(node.ctl("cluster"))
                if {r[0]: int(r[2]) for r in rows} != counts:
                    return False
            return True
        wait_for("every node counts %r" % counts, settled)

        for node in self.nodes:
            out = node.ctl("cluster")
            lines = out.splitlines()
            self.assertRegex(lines[0], r"^NODE +STATE +SESSIONS +LAST SEEN$")
            rows = table(out)
            self.assertEqual(len(rows), 3, out)
            self.assertEqual(rows[0][:2], [node.name, "self"], out)
            self.assertEqual(rows[0][3], "-", out)
            for r in rows[1:]:
                self.assertEqual(r[1], "up", out)
                m = re.fullmatch(r"(\d+\.\d) s ago", r[3])
                self.assertTrue(m, out)
                self.assertLess(float(m.group(1)), NODE_TIMEOUT_MS / 1000.0, out)
            self.assertEqual(sorted(r[0] for r in rows[1:]),
                             sorted(n.name for n in self.nodes if n is not node), out)

            j = node.cluster_json()
            self.assertEqual(j["node"], node.name)
            self.assertIs(j["connected"], True)
            self.assertEqual(j["url"], self.nats.url)
            # Self first, as in the table: its state "self", never seen.
            self.assertEqual(j["nodes"][0], {"node": node.name, "state": "self",
                                             "sessions": counts[node.name],
                                             "last_seen_ms": None}, j)
            peers = {e["node"]: e for e in j["nodes"][1:]}
            self.assertEqual(sorted(peers), sorted(n.name for n in self.nodes if n is not node),
                             j)
            for name, e in peers.items():
                self.assertEqual(e["state"], "up", j)
                self.assertEqual(e["sessions"], counts[name], j)
                self.assertIsInstance(e["last_seen_ms"], int, j)
                self.assertLess(e["last_seen_ms"], NODE_TIMEOUT_MS, j)

            st = node.status_json()["cluster"]
            self.assertEqual(st["node"], node.name)
            self.assertIs(st["connected"], True)
            self.assertEqual(st["url"], self.nats.url)
            self.assertEqual(st["nodes_up"], 2)
            for k in ("messages_in", "messages_out", "dropped", "reconnects"):
                self.assertIsInstance(st[k], int, k)
            self.assertEqual(st["reconnects"], 0)
            self.assertRegex(node.ctl("status"),
                             r"(?m)^cluster: node %s, bus connected to %s; 2 other nodes up; messages in \d+, "
                             r"out \d+, dropped \d+; reconnects 0$" %
                             (node.name, re.escape(self.nats.url)))
            # The bus series (README.md, "Numbers"), without their comments.
            bus = sorted(l for l in node.ctl("metrics").splitlines()
                         if l.startswith(("pier_bus_", "pier_cluster_")))
            self.assertEqual([re.sub(r" \d+$", " N", l) for l in bus], [
                "pier_bus_connected N",
                'pier_bus_dropped_total{direction="in"} N',
                'pier_bus_dropped_total{direction="out"} N',
                'pier_bus_messages_total{direction="in"} N',
                'pier_bus_messages_total{direction="out"} N',
                "pier_bus_reconnects_total N",
                "pier_cluster_nodes_up N"])
            for line in ("pier_bus_connected 1", "pier_cluster_nodes_up 2",
                         'pier_bus_dropped_total{direction="in"} 0',
                         'pier_bus_dropped_total{direction="out"} 0',
                         "pier_bus_reconnects_total 0"):
                self.assertIn(line, bus)
        # Heard from every heartbeat: nothing went missing meanwhile.
        for node in self.nodes:
            self.assertEqual(node.count(r"cluster: node .* is gone"), 0)


def table(out):
    """`pierctl cluster`'s rows after the header, split into
    [node, state, sessions, last seen]."""
    rows = []
    for line in out.splitlines()[1:]:
        if not line.strip():
            continue
        parts = line.split()
        rows.append(parts[:3] + [" ".join(parts[3:])])
    return rows


if __name__ == "__main__":
    unittest.main()
