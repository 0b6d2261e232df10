"""Helpers for the metrics tests: pierd (tests/ws/pierws.py) with its
metrics listener on a free port, plain HTTP requests to it, and a parser for
the Prometheus text format that keeps every series."""
import http.client
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ws"))
import pierws  # noqa: E402
from pierws import Pierd, T, connect, plugin_path, recv_exact  # noqa: E402,F401


LINE_RX = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL_RX = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def metrics_pierd(listeners, plugins, metrics=None):
    """A started Pierd serving metrics ({"port": 0} unless given); its
    metrics port in .metrics_port, from the log line."""
    d = Pierd(listeners, plugins=plugins, top={"metrics": metrics or {"port": 0}})
    d.start()
    m = d.find_log(r"metrics on http://127\.0\.0\.1:(\d+)/metrics$")
    if not m:
        d.kill()
        raise AssertionError("no metrics line in pierd's log:\n" + d.log_text())
    d.metrics_port = int(m.group(1))
    return d


def request(port, path, method="GET", source="127.0.0.1"):
    """(status, headers dict with lower-case names, body bytes), asked from
    the loopback address source."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=T(10), source_address=(source, 0))
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def parse(text):
    """{"families": {name: type}, "help": {name: text},
    "samples": {(name, ((label, value), ...sorted)): float}}. Fails on a
    line it cannot read or a series given twice."""
    families, helps, samples = {}, {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            families[name] = typ
        elif line.startswith("# HELP "):
            _, _, name, h = line.split(" ", 3)
            helps[name] = h
        elif line.startswith("#") or not line:
            continue
        else:
            m = LINE_RX.match(line)
            if not m:
                raise AssertionError("unreadable sample line %r" % line)
            labels = tuple(sorted(LABEL_RX.findall(m.group(2) or "")))
            key = (m.group(1), labels)
            if key in samples:
                raise AssertionError("series given twice: %r" % line)
            samples[key] = float(m.group(3))
    return {"families": families, "help": helps, "samples": samples}


def value(parsed, name, **labels):
    """The value of the one series of name whose labels include labels."""
    want = set(labels.items())
    found = [v for (n, ls), v in parsed["samples"].items() if n == name and want <= set(ls)]
    if len(found) != 1:
        raise AssertionError("%d series of %s%r" % (len(found), name, labels))
    return found[0]


def scrape(port):
    status, headers, body = request(port, "/metrics")
    if status != 200:
        raise AssertionError("/metrics: %d %r" % (status, body))
    return parse(body.decode())


def promtool_check(text):
    """`promtool check metrics` on text: (exit status, its output)."""
    r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=T(60))
    return r.returncode, r.stdout.decode(errors="replace")


def wait_for(what, fn, timeout=None):
    """Polls fn() until it returns a true value, which is returned; fails
    with what after timeout seconds (default 20, scaled)."""
    end = time.monotonic() + (timeout or T(20))
    last = None
    while True:
        try:
            got = fn()
            if got:
                return got
        except AssertionError as e:
            last = e
        if time.monotonic() > end:
            raise AssertionError("never: %s (last: %s)" % (what, last))
        time.sleep(0.1)
