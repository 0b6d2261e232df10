"""A hot reload of the chat plugin on one node (its .so replaced, then
`pierctl reload chat`) while players on every node keep chatting: nobody
leaves, every message sent meanwhile arrives exactly once and in its
sender's order on every node (the host holds the bus messages and packets
that come during the reload for the new version), and the reloaded node
still knows the other nodes' players: their leaves, and the loss of their
node, reach its members."""
import os
import shutil
import threading
import time
import unittest

from piercluster import (C_CHAT, NODE_TIMEOUT_MS, ClusterTest, T, chat_from, joined_notice,
                         nats_server, pkt, plugin_path, start_nodes)

N = 100           # messages per sender
INTERVAL = 0.004  # seconds between them: the stream spans the reload


class ReloadOnOneNode(ClusterTest):
    def test_reload_keeps_rooms_and_messages(self):
        nats = nats_server(self.addCleanup)
        a, b, c = self.nodes = start_nodes(self.addCleanup, [nats.url])
        room = b"reload"
        members = []
        for node in (a, b, b, c, a):
            p = self.player(node, room)
            for m in members:
                m.notice(joined_notice(p, m, room))
            members.append(p)
        a1, b1, b2, c1, a3 = members
        senders = (a1, b1, c1)

        # A new file for b's plugin (renamed into place, as a deployment would).
        fresh = b.chat_so + ".new"
        shutil.copyfile(plugin_path("chat"), fresh)
        os.replace(fresh, b.chat_so)

        def stream(p):
            for i in range(N):
                p.sock.sendall(pkt(C_CHAT, b"%s %03d" % (p.node.name.encode(), i)))
                time.sleep(INTERVAL)
        threads = [threading.Thread(target=stream, args=(p,)) for p in senders]
        mark = b.mark()
        for t in threads:
            t.start()
        time.sleep(N * INTERVAL / 3)
        out = b.ctl("reload", "chat")
        self.assertRegex(out, r"reloaded chat: generation 2,")
        b.wait_log(r"reloaded chat: generation 2,", since=mark)
        for t in threads:
            t.join(T(30))
        self.assertGreater(b.count(r"reloaded chat: generation 2,", since=mark), 0)

        for p in members:
            got = {s: [] for s in senders}
            for _ in range(N * len(senders)):
                pid, body = p.recv(T(20))
                for s in senders:
                    want_pid, head = chat_from(s, p, b"")
                    if pid == want_pid and body.startswith(head):
                        got[s].append(body[len(head):])
                        break
                else:
                    self.fail("%s player %d got %r during the reload" %
                              (p.node.name, p.sid, (pid, body)))
            for s in senders:
                self.assertEqual(got[s], [b"%s %03d" % (s.node.name.encode(), i)
                                          for i in range(N)],
                                 "%s's messages to %s" % (s.node.name, p.node.name))
            p.quiet(0.1)

        # After it: the reloaded node still sends and receives.
        b2.chat(b"from the new version")
        for p in members:
            p.expect(*chat_from(b2, p, b"from the new version"))
        # Remote players are still known on b: a leave is heard there...
        a1.close()
        for p in (b1, b2, c1, a3):
            want = b"%d left reload" % a1.sid if p.node is a else b"eu-1/%d left reload" % a1.sid
            p.notice(want)
        # ...and so is the loss of their node.
        a.proc.kill()
        a.proc.wait()
        for p in (b1, b2, c1):
            p.notice(b"eu-1/%d left reload" % a3.sid, timeout=NODE_TIMEOUT_MS / 1000.0 + T(3))
        for p in (b1, b2, c1):
            p.quiet(0.2)


if __name__ == "__main__":
    unittest.main()
