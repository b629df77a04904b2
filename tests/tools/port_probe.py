#!/usr/bin/env python3
"""The sockets tests' programs (tests/integration/sockets_test.cc): servers and
clients that check what a program sees of a TCP connection, run in one node
each. Every command prints what it saw, one line, and exits 0 when it saw what
loopback gives; the test reads the lines.

  echo-server PORT [HOST]   (HOST a path: a Unix socket there) accepts and echoes each connection until EOF; a
                            connection whose first bytes are "RESET" is closed
                            with an RST; prints "listening" once it listens
  echo-server-report PORT   the same on 127.0.0.1, printing for each connection
                            "accepted local|remote peer HOST sock HOST PORT"
  echo-server-once PORT     the same on 127.0.0.1 for one connection: closes
                            its listener once it accepted it ("closed
                            listener"), and echoes it until its end
  bind-only PORT SECONDS    binds 127.0.0.1:PORT with SO_REUSEADDR and never
                            listens; prints "bound" and holds it
  bind PORT SECONDS         binds 127.0.0.1:PORT and listens; prints "bound"
                            and holds it, or "refused ERRNO"
  half-close PORT [HOST]    sends 1 MiB, shuts down its side, reads the echo to
                            EOF: "half-close ok" when all came back
  bulk PORT MIB             sends MIB MiB and reads the echo at once, checks a
                            SHA-256 of each way
  nonblocking PORT          a non-blocking connect: EINPROGRESS or done, then
                            writable, SO_ERROR 0, getpeername loopback
  reset PORT                asks the server for an RST: "reset" on ECONNRESET
  refused PORT              connect where nothing listens: "refused" on ECONNREFUSED
  many PORT N               N connections open at once, one line each way
  setup PORT N              N times in a row: connect, one byte each way,
                            close; prints "setup p50 MICROS p99 MICROS"
  stall PORT SECONDS MIB    sends MIB MiB while reading nothing for SECONDS,
                            then reads the echo: "stall ok" when all came back
  send-fd PATH              connects to a Unix socket and sends it a descriptor
                            (SCM_RIGHTS): "sent", or "refused ERRNO"
  hold PORT [send]          connects, checks one echo ("connected"), then waits
                            (with send: sending a byte every 0.2 s) for the
                            connection's end: "reset SECONDS", "aborted
                            SECONDS", "eof SECONDS" or "error ERRNO SECONDS"
  route PORT [HOST]         connects, checks one echo, and prints what the
                            program sees and where the kernel says the socket
                            goes: "route local|remote peer HOST PORT sock HOST"
                            (local: to a loopback address of this node)
"""
import errno
import hashlib
import os
import resource
import select
import socket
import sys
import threading
import time

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def connect(port, host="127.0.0.1"):
    if host.startswith("/"):  # a Unix socket at that path
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(30)
        c.connect(host)
        return c
    return socket.create_connection((host, port), timeout=30)


def echo_server(port, host="127.0.0.1", report=False, once=False):
    if host.startswith("/"):  # a Unix socket at that path
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(host)
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
    s.listen(1024)
    print("listening", flush=True)

    def serve(c):
        with c:
            first = True
            while True:
                data = c.recv(65536)
                if first and data.startswith(b"RESET"):
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    return
                first = False
                if not data:
                    return
                c.sendall(data)

    while True:
        c, _ = s.accept()
        if once:
            s.close()
            print("closed listener", flush=True)
            serve(c)
            return
        if report:  # what the server sees of each connection, and where the kernel says it goes
            peer, sock = c.getpeername(), c.getsockname()
            where = {"loopback": "local", "other": "remote"}.get(kernel_remote(c), "unknown")
            print(f"accepted {where} peer {peer[0]} sock {sock[0]} {sock[1]}", flush=True)
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def half_close(port, host="127.0.0.1"):
    c = connect(port, host)
    sent = os.urandom(1 << 20)
    got = bytearray()
    reader = threading.Thread(target=lambda: read_all(c, got))
    reader.start()
    c.sendall(sent)
    c.shutdown(socket.SHUT_WR)
    reader.join()
    print("half-close ok" if bytes(got) == sent else f"half-close got {len(got)} of {len(sent)}")


def read_all(c, into):
    while True:
        data = c.recv(1 << 16)
        if not data:
            return
        into += data


def bulk(port, mib):
    c = connect(port)
    block = os.urandom(1 << 20)
    out_hash, in_hash = hashlib.sha256(), hashlib.sha256()
    got = [0]

    def reader():
        while True:
            data = c.recv(1 << 18)
            if not data:
                return
            in_hash.update(data)
            got[0] += len(data)

    t = threading.Thread(target=reader)
    t.start()
    start = time.monotonic()
    for _ in range(mib):
        c.sendall(block)
        out_hash.update(block)
    c.shutdown(socket.SHUT_WR)
    t.join()
    seconds = time.monotonic() - start
    same = got[0] == mib << 20 and in_hash.digest() == out_hash.digest()
    print(f"bulk {'ok' if same else 'differs'} {mib} MiB {seconds:.3f} s")


def nonblocking(port):
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.setblocking(False)
    err = c.connect_ex(("127.0.0.1", port))
    if err not in (0, errno.EINPROGRESS):
        print(f"nonblocking connect_ex {err}")
        return
    _, writable, _ = select.select([], [c], [], 10)
    so_error = c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    peer = c.getpeername()
    c.setblocking(True)
    c.sendall(b"ping")
    reply = c.recv(4)
    ok = writable and so_error == 0 and peer == ("127.0.0.1", port) and reply == b"ping"
    print(f"nonblocking {'ok' if ok else 'bad'} writable={bool(writable)} so_error={so_error} peer={peer} reply={reply}")


def reset(port):
    c = connect(port)
    c.sendall(b"RESET")
    try:
        data = c.recv(10)
        print(f"no reset: read {data!r}")
    except ConnectionResetError:
        print("reset")


def refused(port):
    try:
        connect(port)
        print("connected")
    except ConnectionRefusedError:
        print("refused")


def bind(port, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        s.listen()
    except OSError as e:
        print(f"refused {e.errno}", flush=True)
        return
    print("bound", flush=True)
    time.sleep(seconds)


def bind_only(port, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    print("bound", flush=True)
    time.sleep(seconds)


def many(port, n):
    conns = [connect(port) for _ in range(n)]
    for i, c in enumerate(conns):
        c.sendall(f"{i}\n".encode())
    good = 0
    for i, c in enumerate(conns):
        line = b""
        while not line.endswith(b"\n"):
            data = c.recv(64)
            if not data:
                break
            line += data
        good += line == f"{i}\n".encode()
        c.close()
    print(f"many {good} of {n}")


def setup(port, n):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sendall(b"x")
        if c.recv(1) != b"x":
            print("setup no echo")
            return
        c.close()
        times.append((time.perf_counter() - start) * 1e6)
    times.sort()
    print(f"setup p50 {times[len(times) // 2]:.0f} p99 {times[min(len(times) - 1, len(times) * 99 // 100)]:.0f}")


def stall(port, seconds, mib):
    c = connect(port)
    c.settimeout(None)
    sent = os.urandom(mib << 20)
    sender = threading.Thread(target=c.sendall, args=(sent,))
    sender.start()
    time.sleep(seconds)
    got = bytearray()
    while len(got) < len(sent):
        data = c.recv(1 << 16)
        if not data:
            break
        got += data
    sender.join()
    print("stall ok" if bytes(got) == sent else f"stall got {len(got)} of {len(sent)}")


def send_fd(path):
    c = connect(0, path)
    try:
        socket.send_fds(c, [b"x"], [0])
        print("sent")
    except OSError as e:
        print(f"refused {e.errno}")


def hold(port, sending=False):
    c = connect(port)
    c.sendall(b"hi")
    if c.recv(2) != b"hi":
        print("no echo", flush=True)
        return
    print("connected", flush=True)
    start = time.monotonic()
    try:
        # Idle, or a byte every 0.2 s (then the kernel has unacknowledged
        # data whenever the far end vanishes, and no keepalive runs).
        c.settimeout(0.2 if sending else 60)
        while True:
            if sending:
                c.sendall(b"x")
            try:
                data = c.recv(10)
            except TimeoutError:
                if time.monotonic() - start > 60:
                    raise
                continue
            if not data:
                print(f"eof {time.monotonic() - start:.1f}", flush=True)
                return
            if not sending:
                print(f"data {data!r}", flush=True)
                return
    except ConnectionResetError:
        print(f"reset {time.monotonic() - start:.1f}", flush=True)
    except ConnectionAbortedError:
        print(f"aborted {time.monotonic() - start:.1f}", flush=True)
    except OSError as e:
        print(f"error {e.errno} {time.monotonic() - start:.1f}", flush=True)


def kernel_remote(sock):
    """The far address /proc/net/tcp{,6} gives sock's inode: "loopback" or "other"."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[9] != inode:
                    continue
                addr = fields[2].split(":")[0]
                if len(addr) == 8:
                    return "loopback" if int(addr[6:8], 16) == 127 else "other"
                v4_mapped = addr[:24] == "0000000000000000FFFF0000"
                if addr == "00000000000000000000000001000000" or (v4_mapped and int(addr[30:32], 16) == 127):
                    return "loopback"
                return "other"
    return "unknown"


def route(port, host="127.0.0.1"):
    c = connect(port, host)
    c.sendall(b"hi")
    if c.recv(2) != b"hi":
        print("no echo")
        return
    peer, sock = c.getpeername(), c.getsockname()
    where = {"loopback": "local", "other": "remote"}.get(kernel_remote(c), "unknown")
    print(f"route {where} peer {peer[0]} {peer[1]} sock {sock[0]}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "echo-server":
        echo_server(int(args[0]), *(args[1:2]))
    elif cmd == "echo-server-report":
        echo_server(int(args[0]), report=True)
    elif cmd == "echo-server-once":
        echo_server(int(args[0]), once=True)
    elif cmd == "bind-only":
        bind_only(int(args[0]), float(args[1]))
    elif cmd == "bind":
        bind(int(args[0]), float(args[1]))
    elif cmd == "half-close":
        half_close(int(args[0]), *(args[1:2]))
    elif cmd == "bulk":
        bulk(int(args[0]), int(args[1]))
    elif cmd == "nonblocking":
        nonblocking(int(args[0]))
    elif cmd == "reset":
        reset(int(args[0]))
    elif cmd == "refused":
        refused(int(args[0]))
    elif cmd == "many":
        many(int(args[0]), int(args[1]))
    elif cmd == "setup":
        setup(int(args[0]), int(args[1]))
    elif cmd == "stall":
        stall(int(args[0]), float(args[1]), int(args[2]))
    elif cmd == "send-fd":
        send_fd(args[0])
    elif cmd == "hold":
        hold(int(args[0]), args[1:2] == ["send"])
    elif cmd == "route":
        route(int(args[0]), *(args[1:2]))
    else:
        sys.exit(f"unknown command {cmd}")
