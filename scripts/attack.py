#!/usr/bin/env python3
"""Hostile peers against `leaklab serve`, with a good client beside them.

For each attack a fresh server is started (so that its peak RSS, VmHWM, is
that attack's), a good client (`leaklab load`) runs once alone and once while
the attack goes on, and one table row is printed: good calls ok/total,
p50/p99 without and with the attack and their ratio, the server's peak RSS,
the server's CPU (percent of one core) without and with the attack, the
attacker's own CPU (this process: it runs on the same machine and takes CPU
from the good client too), and the closes and refusals it counted
(/metrics).

Targets: every good call succeeds, p99 within 2x of no attack, peak RSS at
most the input budget + 64 MiB. A server whose RSS passes --rss-cap is
killed (this machine is shared) and the row says so.

Only the standard library. Exits non-zero only if the script itself breaks.
"""

import argparse
import json
import os
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

MIB = 1 << 20
CALL, VERSION_1 = 1, 0x80010000
T_STOP, T_I32, T_I64, T_STRING, T_STRUCT, T_LIST = 0, 8, 10, 11, 12, 15


# --- Thrift strict binary -------------------------------------------------

def message_head(name, seqid=1):
    return struct.pack(">Ii", VERSION_1 | CALL, len(name)) + name + struct.pack(">i", seqid)


def field(ftype, fid):
    return struct.pack(">bh", ftype, fid)


def echo_call(msg, seqid=1, extra=b""):
    """An Echo call: echo(1: Request{1: id, 2: msg, extra...})."""
    req = field(T_I64, 1) + struct.pack(">q", seqid) + field(T_STRING, 2) + struct.pack(">i", len(msg)) + msg
    return message_head(b"echo", seqid) + field(T_STRUCT, 1) + req + extra + bytes([T_STOP, T_STOP])


def framed(body):
    return struct.pack(">i", len(body)) + body


# --- the server under attack ------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pid):
    """User + system CPU seconds a process has used, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def own_cpu_seconds():
    """CPU seconds of this process: the attacker threads, mostly."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Server:
    def __init__(self, binary, flags, rss_cap_mib, work):
        self.ready = os.path.join(work, "ready.json")
        self.log = open(os.path.join(work, "serve.log"), "wb")
        rpc, admin = free_port(), free_port()
        self.rpc, self.admin = ("127.0.0.1", rpc), f"127.0.0.1:{admin}"
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", f"127.0.0.1:{rpc}", "--admin", self.admin, "--ready-file", self.ready]
            + flags,
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        self.peak_kib, self.capped, self.rss_cap_kib = 0, False, rss_cap_mib * 1024
        until = time.time() + 30
        while not os.path.exists(self.ready):
            if self.proc.poll() is not None or time.time() > until:
                raise RuntimeError(f"leaklab serve did not start (see {self.log.name})")
            time.sleep(0.02)
        self.watching = True
        self.watcher = threading.Thread(target=self.watch, daemon=True)
        self.watcher.start()

    def watch(self):
        while self.watching and self.proc.poll() is None:
            rss = status_kib(self.proc.pid, "VmRSS") or 0
            if rss > self.rss_cap_kib:
                self.capped = True
                self.peak_kib = max(self.peak_kib, status_kib(self.proc.pid, "VmHWM") or rss)
                self.proc.kill()
                return
            time.sleep(0.05)

    def metrics(self):
        try:
            with urllib.request.urlopen(f"http://{self.admin}/metrics", timeout=10) as r:
                text = r.read().decode()
        except Exception:
            return {}
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, _, value = line.partition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    def stop(self):
        self.watching = False
        hwm = status_kib(self.proc.pid, "VmHWM")
        if hwm:
            self.peak_kib = max(self.peak_kib, hwm)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# --- attacks ------------------------------------------------------------------
# Each runs until `stop` is set; a connection the server closes is opened
# again (a real attacker retries).

def connect(addr, timeout=1.0):
    s = socket.create_connection(addr, timeout=5)
    s.settimeout(timeout)
    return s


def send_until(s, data, stop, step):
    """Sends `data` in writes of `step` bytes; False once the peer is gone."""
    view = memoryview(data)
    i = 0
    while i < len(view) and not stop.is_set():
        try:
            i += s.send(view[i:i + step])
        except socket.timeout:
            continue
        except OSError:
            return False
    return True


def hold(s, stop):
    """Keeps `s` open, reading nothing, until `stop` or until it is closed."""
    s.settimeout(0.2)
    while not stop.is_set():
        try:
            if s.recv(1, socket.MSG_PEEK) == b"":
                return
        except socket.timeout:
            continue
        except OSError:
            return
        time.sleep(0.2)


def retrying(one_connection):
    def run(addr, stop, stats):
        while not stop.is_set():
            try:
                s = connect(addr)
            except OSError:
                stats["connect_failures"] = stats.get("connect_failures", 0) + 1
                time.sleep(0.05)
                continue
            stats["connections"] = stats.get("connections", 0) + 1
            try:
                one_connection(s, stop)
            finally:
                s.close()
            time.sleep(0.02)
    return run


# (a) An unframed call whose Request holds a 4 Mi-element list<struct>
# (32 MiB), 1 KiB per write: a decoder that starts over on every read does
# quadratic work.
QUADRATIC = None


def quadratic_message():
    global QUADRATIC
    if QUADRATIC is None:
        n = 4 * MIB
        element = field(T_I32, 1) + struct.pack(">i", 7) + bytes([T_STOP])
        extra = field(T_LIST, 9) + struct.pack(">bi", T_STRUCT, n) + element * n
        QUADRATIC = echo_call(b"x", 1, extra)
    return QUADRATIC


def quadratic_one(s, stop):
    if send_until(s, quadratic_message(), stop, 1024):
        hold(s, stop)


# (b) A framed call of an unknown method with a 16 MiB name, 3 times; the
# exception replies (which name the method) are never read.
def big_name_attack(addr, stop, stats):
    name = b"m" * (16 * MIB)
    call = framed(message_head(name) + bytes([T_STOP]))
    try:
        s = connect(addr)
    except OSError:
        return
    stats["connections"] = 1
    for _ in range(3):
        if not send_until(s, call, stop, 1 * MIB):
            break
    hold(s, stop)
    s.close()


# (c) A partial 48 MiB frame: all but its last byte, then nothing.
def partial_frame_one(s, stop):
    size = 48 * MIB
    head = struct.pack(">i", size) + message_head(b"echo")
    filler = b"\0" * (size - len(head) + 4 - 1)
    if send_until(s, head + filler, stop, 256 * 1024):
        hold(s, stop)


# (d) Many connections held open, each reopened at once when closed.
def flood_attack(count):
    def run(addr, stop, stats):
        sel = selectors.DefaultSelector()
        opened = 0
        while not stop.is_set():
            while len(sel.get_map()) < count and not stop.is_set():
                try:
                    s = socket.create_connection(addr, timeout=1)
                except OSError:
                    stats["connect_failures"] = stats.get("connect_failures", 0) + 1
                    time.sleep(0.01)
                    break
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ)
                opened += 1
            for key, _ in sel.select(timeout=0.1):
                try:
                    gone = key.fileobj.recv(4096) == b""
                except OSError:
                    gone = True
                if gone:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        stats["connections"] = opened
    return run


# (e) Echo calls of 1 MiB, pipelined, replies never read.
def never_read_one(s, stop):
    call = framed(echo_call(b"r" * MIB))
    while not stop.is_set():
        if not send_until(s, call, stop, 1 * MIB):
            return


# (f) Many connections, each sending a 1 KiB framed call one byte per second.
def trickle_attack(count):
    def run(addr, stop, stats):
        call = framed(echo_call(b"t" * 1024))
        conns = []
        opened = 0
        while not stop.is_set():
            while len(conns) < count:
                try:
                    s = socket.create_connection(addr, timeout=1)
                except OSError:
                    stats["connect_failures"] = stats.get("connect_failures", 0) + 1
                    break
                s.setblocking(False)
                conns.append([s, 0])
                opened += 1
            alive = []
            for c in conns:
                try:
                    c[0].send(call[c[1]:c[1] + 1])
                    c[1] = (c[1] + 1) % len(call)
                    alive.append(c)
                except OSError:
                    c[0].close()
            conns = alive
            stop.wait(1.0)
        for c in conns:
            c[0].close()
        stats["connections"] = opened
    return run


def parallel(run, n):
    def many(addr, stop, stats):
        threads = [threading.Thread(target=run, args=(addr, stop, stats), daemon=True) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return many


# name, description, run(addr, stop, stats), extra server flags
ATTACKS = [
    ("a-quadratic", "unframed list<struct> 32 MiB, 1 KiB writes, 2 conns", parallel(retrying(quadratic_one), 2), []),
    ("b-big-name", "framed unknown method, 16 MiB name, 3 calls, replies unread", big_name_attack, []),
    ("c-partial-48M", "16 conns each holding a partial 48 MiB frame", parallel(retrying(partial_frame_one), 16), []),
    ("d-conn-flood", "600 conns held against --max-conns 256", flood_attack(600), ["--max-conns", "256"]),
    ("e-never-read", "pipelined 1 MiB echo calls, replies never read", retrying(never_read_one), []),
    ("f-trickle", "500 conns, 1 byte per second each", trickle_attack(500), []),
]


# --- the good client ----------------------------------------------------------

def good_load(binary, addr, duration):
    cmd = [binary, "load", "--target", f"{addr[0]}:{addr[1]}", "--conns", "4", "--rps", "500",
           "--payload", "1024", "--duration", duration, "--json"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


def load_result(proc):
    out, _ = proc.communicate()
    try:
        return json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": 0, "errors": 0, "p50_ms": float("nan"), "p99_ms": float("nan")}


def run_attack(binary, attack, args):
    name, _, run, flags = attack
    with tempfile.TemporaryDirectory(prefix="leaklab-attack-") as work:
        server = Server(binary, flags, args.rss_cap, work)
        try:
            t0, c0 = time.time(), cpu_seconds(server.proc.pid)
            calm = load_result(good_load(binary, server.rpc, args.duration))
            t1, c1 = time.time(), cpu_seconds(server.proc.pid)
            stop, stats = threading.Event(), {}
            load = good_load(binary, server.rpc, args.duration)
            time.sleep(0.3)  # the good client is connected before the attack
            a0 = own_cpu_seconds()
            attacker = threading.Thread(target=run, args=(server.rpc, stop, stats), daemon=True)
            attacker.start()
            hot = load_result(load)
            t2, c2, a1 = time.time(), cpu_seconds(server.proc.pid), own_cpu_seconds()
            metrics = server.metrics()
            stop.set()
            attacker.join(10)
        finally:
            server.stop()
    cpu = {"calm": share(c0, c1, t1 - t0), "hot": share(c1, c2, t2 - t1), "attacker": share(a0, a1, t2 - t1)}
    return {"name": name, "calm": calm, "hot": hot, "cpu": cpu, "peak_mib": server.peak_kib / 1024,
            "capped": server.capped, "metrics": metrics, "stats": stats}


def share(before, after, seconds):
    """CPU seconds used over `seconds`, in percent of one core."""
    if before is None or after is None or seconds <= 0:
        return float("nan")
    return 100 * (after - before) / seconds


def ratio(a, b):
    return b / a if a and a == a and b == b and a > 0 else float("nan")


COUNTERS = [("refused", "leaklab_refused_connections_total"), ("budget", "leaklab_budget_closes_total"),
            ("wto", "leaklab_write_timeouts_total"), ("oflow", "leaklab_output_overflows_total"),
            ("fto", "leaklab_frame_timeouts_total"), ("proto", "leaklab_protocol_errors_total")]


def print_table(rows, input_budget_mib):
    head = (f"{'attack':<15} {'good ok/total':>14} {'p50 calm':>9} {'p50 hit':>9} {'x':>6} "
            f"{'p99 calm':>9} {'p99 hit':>9} {'x':>6} {'peak RSS':>10} {'srv CPU calm/hit':>16} {'atk CPU':>7}"
            f"  server closes")
    print(head)
    print("-" * len(head))
    for r in rows:
        hot, calm, m = r["hot"], r["calm"], r["metrics"]
        total = hot.get("ok", 0) + hot.get("errors", 0)
        closes = " ".join(f"{k}={int(m[n])}" for k, n in COUNTERS if m.get(n))
        peak = f"{r['peak_mib']:.0f} MiB" + ("!" if r["capped"] else "")
        print(f"{r['name']:<15} {hot.get('ok', 0):>6}/{total:<7} {calm['p50_ms']:>7.2f}ms {hot['p50_ms']:>7.2f}ms "
              f"{ratio(calm['p50_ms'], hot['p50_ms']):>6.1f} {calm['p99_ms']:>7.2f}ms {hot['p99_ms']:>7.2f}ms "
              f"{ratio(calm['p99_ms'], hot['p99_ms']):>6.1f} {peak:>10} "
              f"{r['cpu']['calm']:>8.0f}%/{r['cpu']['hot']:>6.0f}% {r['cpu']['attacker']:>6.0f}%  {closes or '-'}")
    print()
    limit = input_budget_mib + 64
    for r in rows:
        hot = r["hot"]
        misses = []
        if hot.get("errors", 0) or not hot.get("ok", 0):
            misses.append(f"{hot.get('errors', 0)} good calls failed")
        if not ratio(r["calm"]["p99_ms"], hot["p99_ms"]) <= 2:
            misses.append("p99 more than 2x")
        if r["capped"] or r["peak_mib"] > limit:
            misses.append(f"peak RSS over {limit} MiB" + (" (killed at the cap)" if r["capped"] else ""))
        print(f"{r['name']:<15} {'meets every target' if not misses else 'misses: ' + '; '.join(misses)}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("binary", help="path to leaklab (target/release/leaklab)")
    p.add_argument("--duration", default="5s", help="each good-client run (default 5s)")
    p.add_argument("--only", action="append", help="run only attacks whose name starts with this (repeatable)")
    p.add_argument("--rss-cap", type=int, default=3072, help="kill a server past this RSS, MiB (default 3072)")
    p.add_argument("--input-budget", type=int, default=256, help="the server's --max-input-bytes, MiB (for the target)")
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    attacks = [a for a in ATTACKS if not args.only or any(a[0].startswith(o) for o in args.only)]
    rows = []
    for a in attacks:
        print(f"attack {a[0]}: {a[1]} ...", file=sys.stderr, flush=True)
        rows.append(run_attack(args.binary, a, args))
    print_table(rows, args.input_budget)


if __name__ == "__main__":
    main()
