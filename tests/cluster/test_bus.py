"""The nodes lose their NATS server: a lone server killed and started again
on its port (each node says so once each way, local rooms keep working
meanwhile, and cross-node chat resumes by itself), and one server of a
cluster of three killed under a node (the node moves to another server
with every session kept). node_timeout_ms is long here so that the outage,
short as it is, is not taken for the loss of a node: nobody leaves."""
import re
import time
import unittest

from piercluster import (HEARTBEAT_MS, ClusterTest, chat_from, joined_notice, nats_cluster,
                         nats_server, start_nodes, wait_for)

PATIENT = {"node_timeout_ms": 8000}

DOWN = (r"cluster: bus disconnected \(%s\): local sessions carry on; cross-node delivery "
        r"resumes on reconnect$")
BACK = r"cluster: bus reconnected to %s$"


def room_of_four(tc, nodes, room):
    """a1, a2 on the first node, b1 and c1 on the others, all in room,
    every join notice read."""
    a, b, c = nodes
    a1 = tc.player(a, room)
    a2 = tc.player(a, room)
    a1.notice(joined_notice(a2, a1, room))
    b1 = tc.player(b, room)
    for p in (a1, a2):
        p.notice(joined_notice(b1, p, room))
    c1 = tc.player(c, room)
    for p in (a1, a2, b1):
        p.notice(joined_notice(c1, p, room))
    return a1, a2, b1, c1


class LoneServerRestarts(ClusterTest):
    def test_local_rooms_carry_on_and_delivery_resumes(self):
        nats = nats_server(self.addCleanup)
        url = nats.url
        nodes = self.nodes = start_nodes(self.addCleanup, [url], cluster=PATIENT)
        a1, a2, b1, c1 = room_of_four(self, nodes, b"outage")
        marks = [n.mark() for n in nodes]

        nats.kill()
        for n, m in zip(nodes, marks):
            n.wait_log(DOWN % re.escape(url), since=m)
            wait_for("%s reports the bus down" % n.name,
                     lambda n=n: n.status_json()["cluster"]["connected"] is False)
            self.assertIs(n.cluster_json()["connected"], False)
        # Local delivery does not need the bus.
        a1.chat(b"while down")
        for p in (a1, a2):
            p.expect(*chat_from(a1, p, b"while down"))
        b1.chat(b"b while down")
        b1.expect(*chat_from(b1, b1, b"b while down"))

        nats.restart()
        self.assertEqual(nats.url, url)
        for n, m in zip(nodes, marks):
            n.wait_log(BACK % re.escape(url), since=m)
        time.sleep(3 * HEARTBEAT_MS / 1000.0)
        a1.chat(b"after")
        # What was published while down may go out on the reconnect: the
        # others may get it (once, before what came after), or not, if
        # their own subscription came back later. The sender's own node
        # never delivers it twice.
        late = {a1: [chat_from(b1, a1, b"b while down")],
                a2: [chat_from(b1, a2, b"b while down")],
                b1: [chat_from(a1, b1, b"while down")],
                c1: [chat_from(a1, c1, b"while down"), chat_from(b1, c1, b"b while down")]}
        for p in (a1, a2, b1, c1):
            want = chat_from(a1, p, b"after")
            seen = []
            while True:
                got = p.recv()
                if got == want:
                    break
                self.assertIn(got, late[p], "%s player" % p.node.name)
                self.assertNotIn(got, seen, "delivered twice on %s" % p.node.name)
                seen.append(got)
        b1.chat(b"b after")
        for p in (a1, a2, b1, c1):
            p.expect(*chat_from(b1, p, b"b after"))
        time.sleep(0.3)
        for n, m in zip(nodes, marks):
            self.assertEqual(n.count(DOWN % re.escape(url), since=m), 1, n.name)
            self.assertEqual(n.count(BACK % re.escape(url), since=m), 1, n.name)
            self.assertEqual(n.count(r"cluster: node .* (left|is gone)", since=m), 0, n.name)
            st = n.status_json()["cluster"]
            self.assertIs(st["connected"], True)
            self.assertEqual(st["reconnects"], 1)
        for p in (a1, a2, b1, c1):
            p.quiet(0.2)


class ServerOfThreeDies(ClusterTest):
    def test_node_moves_to_another_server(self):
        servers = nats_cluster(self.addCleanup)
        urls = [s.url for s in servers]
        nodes = self.nodes = start_nodes(self.addCleanup, urls, cluster=PATIENT)
        a1, a2, b1, c1 = room_of_four(self, nodes, b"failover")
        a = nodes[0]
        before = {n.name: n.status_json()["cluster"]["url"] for n in nodes}
        self.assertIn(before["eu-1"], urls)
        victim = next(s for s in servers if s.url == before["eu-1"])
        moved = [n for n in nodes if before[n.name] == victim.url]
        marks = {n.name: n.mark() for n in nodes}

        victim.kill()
        for n in moved:
            n.wait_log(DOWN % re.escape(victim.url), since=marks[n.name])
            m = n.wait_log(BACK % r"(nats://127\.0\.0\.1:\d+)", since=marks[n.name])
            self.assertIn(m.group(1), urls)
            self.assertNotEqual(m.group(1), victim.url)
            st = n.status_json()["cluster"]
            self.assertIs(st["connected"], True)
            self.assertEqual(st["url"], m.group(1))
            self.assertEqual(st["reconnects"], 1)
        time.sleep(3 * HEARTBEAT_MS / 1000.0)
        # Every session of eu-1 is still there and talks across nodes.
        status = a.status_json()
        self.assertEqual(status["sessions"]["open"], 2)
        for sender in (a1, b1, c1, a2):
            text = b"after failover from " + sender.node.name.encode()
            sender.chat(text)
            for p in (a1, a2, b1, c1):
                p.expect(*chat_from(sender, p, text))
        for n in nodes:
            self.assertEqual(n.count(r"cluster: node .* (left|is gone)",
                                     since=marks[n.name]), 0, n.name)
            self.assertTrue(n.sees_up([m.name for m in nodes if m is not n]))
        for n in moved:
            self.assertEqual(n.count(DOWN % re.escape(victim.url), since=marks[n.name]), 1)
            self.assertEqual(n.count(BACK % r"nats://\S+", since=marks[n.name]), 1)
        for p in (a1, a2, b1, c1):
            p.quiet(0.2)


if __name__ == "__main__":
    unittest.main()
