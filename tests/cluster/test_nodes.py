"""Nodes coming and going: a node killed with SIGKILL is declared gone after
node_timeout_ms and each of its players leaves its room on every other
node; a node that stops cleanly says goodbye; a killed node started again
under its name comes back; a second node with a name in use refuses to
start; a node started before any NATS server runs alone until one
answers."""
import re
import socket
import subprocess
import time
import unittest

from piercluster import (NODE_TIMEOUT_MS, ClusterTest, Nats, Node, T, chat_from, joined_notice,
                         nats_server, rebase, start_nodes, wait_for)
from test_rooms import table


class NodesComeAndGo(ClusterTest):
    def setUp(self):
        self.nats = nats_server(self.addCleanup)
        self.nodes = start_nodes(self.addCleanup, [self.nats.url])
        self.a, self.b, self.c = self.nodes

    def collect_notices(self, player, want, timeout):
        """Reads S_SYSTEM notices until it has every one of want (a set, in
        any order); anything else fails."""
        want = set(want)
        end = time.monotonic() + timeout
        while want:
            left = end - time.monotonic()
            if left <= 0:
                self.fail("%s player %d: still waiting for %r" %
                          (player.node.name, player.sid, sorted(want)))
            pid, body = player.recv(left)
            self.assertEqual(pid, 102, body)
            self.assertIn(body, want)
            want.discard(body)

    def test_killed_node_players_leave_everywhere(self):
        a1 = self.player(self.a, b"k1")
        c1 = self.player(self.c, b"k1")
        c2 = self.player(self.c, b"k1")
        a1.notice(joined_notice(c1, a1, b"k1"))
        a1.notice(joined_notice(c2, a1, b"k1"))
        b1 = self.player(self.b, b"k2")
        c3 = self.player(self.c, b"k2")
        b1.notice(joined_notice(c3, b1, b"k2"))
        marks = {n.name: n.mark() for n in (self.a, self.b)}

        self.c.proc.kill()
        t0 = time.monotonic()
        self.c.proc.wait()
        limit = NODE_TIMEOUT_MS / 1000.0 + T(2)
        self.collect_notices(a1, {b"eu-3/%d left k1" % c1.sid, b"eu-3/%d left k1" % c2.sid},
                             limit)
        self.collect_notices(b1, {b"eu-3/%d left k2" % c3.sid}, limit)
        self.assertLess(time.monotonic() - t0, limit)
        for n in (self.a, self.b):
            n.wait_log(r'cluster: node "eu-3" is gone \(not heard from for %d ms\)$' %
                       NODE_TIMEOUT_MS, since=marks[n.name])
            rows = {r[0]: r for r in table(n.ctl("cluster"))}
            self.assertEqual(rows["eu-3"][1], "gone", rows)
            self.assertRegex(rows["eu-3"][3], r"^\d+\.\d s ago$")
            self.assertEqual(rows["eu-2" if n is self.a else "eu-1"][1], "up", rows)
            peers = n.peers()
            self.assertEqual(peers["eu-3"]["state"], "gone")
            self.assertGreaterEqual(peers["eu-3"]["last_seen_ms"], NODE_TIMEOUT_MS)
            self.assertEqual(n.status_json()["cluster"]["nodes_up"], 1)
        a1.quiet(0.2)
        b1.quiet(0.2)

        # The two left still talk.
        b1.send(1, b"k1")
        b1.notice(b"%d joined k1" % b1.sid)
        a1.notice(joined_notice(b1, a1, b"k1"))
        a1.chat(b"still here")
        a1.expect(*chat_from(a1, a1, b"still here"))
        b1.expect(*chat_from(a1, b1, b"still here"))

        # eu-3 started again under its name comes back.
        marks = {n.name: n.mark() for n in (self.a, self.b)}
        c = Node("eu-3", [self.nats.url])
        self.addCleanup(c.kill)
        c.start()
        c.wait_log(r'cluster: node "eu-3" joined the bus at %s$' % re.escape(self.nats.url))
        for n in (self.a, self.b):
            n.wait_log(r'cluster: node "eu-3" is up$', since=marks[n.name])
            wait_for("%s sees eu-3 up" % n.name, lambda n=n: n.sees_up(["eu-3"]))
        wait_for("eu-3 sees both up", lambda: c.sees_up(["eu-1", "eu-2"]))
        self.nodes = [self.a, self.b, c]
        rebase(self.nodes)
        c4 = self.player(c, b"k1")
        for p in (a1, b1):
            p.notice(joined_notice(c4, p, b"k1"))
        c4.chat(b"back")
        for p in (a1, b1, c4):
            p.expect(*chat_from(c4, p, b"back"))

    def test_stopped_node_says_goodbye(self):
        a1 = self.player(self.a, b"bye")
        c1 = self.player(self.c, b"bye")
        a1.notice(joined_notice(c1, a1, b"bye"))
        marks = {n.name: n.mark() for n in (self.a, self.b)}
        t0 = time.monotonic()
        self.c.stop()
        a1.notice(b"eu-3/%d left bye" % c1.sid, timeout=NODE_TIMEOUT_MS / 1000.0 + T(2))
        for n in (self.a, self.b):
            n.wait_log(r'cluster: node "eu-3" left$', since=marks[n.name])
        # A goodbye, not a timeout: it did not take node_timeout_ms.
        self.assertLess(time.monotonic() - t0, NODE_TIMEOUT_MS / 1000.0)
        time.sleep(NODE_TIMEOUT_MS / 1000.0 + 0.5)
        for n in (self.a, self.b):
            self.assertEqual(n.count(r'cluster: node "eu-3" is gone', since=marks[n.name]), 0)
        a1.quiet(0.2)

    def test_second_node_with_a_used_name_refuses(self):
        a1 = self.player(self.a, b"dup")
        b1 = self.player(self.b, b"dup")
        a1.notice(joined_notice(b1, a1, b"dup"))
        marks = {n.name: n.mark() for n in self.nodes}
        dup = Node("eu-1", [self.nats.url])
        self.addCleanup(dup.kill)
        r = subprocess.run(dup.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=T(30))
        out = r.stdout.decode(errors="replace")
        self.assertEqual(r.returncode, 1, out)
        self.assertIn('cluster: node name "eu-1" is already used by a running node; '
                      'give this one another cluster.node\n', out)
        self.assertNotIn("pierd ready", out)
        self.a.wait_log(r'cluster: refused a second node named "eu-1"$', since=marks["eu-1"])
        # Nothing changed for anyone: no goodbye or loss of eu-1 was heard.
        time.sleep(4 * 0.2)
        for n in self.nodes:
            self.assertEqual(n.count(r'cluster: node "eu-1" (left|is gone|is up)',
                                     since=marks[n.name]), 0, n.name)
        for n in (self.b, self.c):
            self.assertEqual(n.peers()["eu-1"]["state"], "up")
        b1.chat(b"still one eu-1")
        a1.expect(*chat_from(b1, a1, b"still one eu-1"))
        b1.expect(*chat_from(b1, b1, b"still one eu-1"))
        a1.quiet(0.2)
        b1.quiet(0.2)


class BeforeNats(ClusterTest):
    def test_node_runs_alone_until_nats_answers(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there until the server below starts
        url = "nats://127.0.0.1:%d" % port
        a = Node("eu-1", [url])
        self.addCleanup(a.kill)
        a.start()
        a.wait_log(r"cluster: no NATS server answers yet \(%s\): running alone until one does$" %
                   re.escape(url))
        a1 = self.player(a, b"early")
        a2 = self.player(a, b"early")
        a1.notice(joined_notice(a2, a1, b"early"))
        a2.chat(b"alone")
        for p in (a1, a2):
            p.expect(*chat_from(a2, p, b"alone"))
        st = a.status_json()["cluster"]
        self.assertIs(st["connected"], False)

        nats = Nats("s1", port=port)
        self.addCleanup(nats.kill)
        nats.start()
        a.wait_log(r'cluster: node "eu-1" joined the bus at %s$' % re.escape(url), T(20))
        (b,) = start_nodes(self.addCleanup, [url], names=("eu-2",))
        wait_for("eu-1 sees eu-2", lambda: a.sees_up(["eu-2"]))
        self.nodes = [a, b]
        rebase(self.nodes)
        b1 = self.player(b, b"early")
        for p in (a1, a2):
            p.notice(joined_notice(b1, p, b"early"))
        a1.chat(b"together")
        for p in (a1, a2, b1):
            p.expect(*chat_from(a1, p, b"together"))
        self.assertIs(a.status_json()["cluster"]["connected"], True)


if __name__ == "__main__":
    unittest.main()
