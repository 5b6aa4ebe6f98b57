#!/usr/bin/env python3
"""Deterministic TCP traffic for the integration tests.

  server HOST PORT N        accept forever; per connection read exactly N bytes,
                            send N bytes back, then wait for the peer to close
  client HOST PORT N M      M connections, each: send N bytes, read N bytes, close
  parallel HOST PORT N M    like client, with the M connections made at once
  closefirst HOST PORT K    K connections closed right after connect (no data)
  latesend HOST PORT K FILE accept K connections and read each to EOF, print
                            "eof"; once FILE exists, send 1 byte on each (data
                            after the peer's close) and print "sent"
  hold HOST PORT N K        like client with K connections, but keep them open
                            (prints "ready" when all exchanged, then sleeps)
  more HOST PORT N K FILE   like hold; once FILE exists, send N more bytes on
                            each connection, print "sent", and sleep
  refused HOST PORT K       K connects to a closed port (each must be refused)
  fail HOST PORT K ERRNO    K concurrent connects that must all fail with ERRNO
                            (e.g. ETIMEDOUT, EHOSTUNREACH)
  bulk HOST PORT SECONDS    send as fast as possible for SECONDS, then close;
                            prints "sent BYTES"
  sink HOST PORT            accept forever and discard everything
  listen HOST PORT NAME     set the process name (prctl PR_SET_NAME) to NAME
                            (Python escapes: \\n, \\xff…), listen, print "ready", sleep
"""
import ctypes
import errno
import os
import socket
import sys
import threading
import time


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def read_exactly(conn, n):
    got = 0
    while got < n:
        chunk = conn.recv(min(65536, n - got))
        if not chunk:
            raise SystemExit(f"peer closed after {got} of {n} bytes")
        got += len(chunk)


def serve(host, port, handler):
    srv = socket.socket(family(host), socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(1024)
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


def exchange(host, port, n):
    c = socket.create_connection((host, port))
    c.sendall(b"x" * n)
    read_exactly(c, n)
    return c


def main():
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "server":
        n = int(sys.argv[4])

        def handle(conn):
            read_exactly(conn, n)
            conn.sendall(b"y" * n)
            while conn.recv(65536):
                pass
            conn.close()

        serve(host, port, handle)
    elif mode == "sink":
        def drain(conn):
            while conn.recv(1 << 20):
                pass
            conn.close()

        serve(host, port, drain)
    elif mode == "client":
        n, m = int(sys.argv[4]), int(sys.argv[5])
        for _ in range(m):
            exchange(host, port, n).close()
        print("done", flush=True)
    elif mode == "parallel":
        n, m = int(sys.argv[4]), int(sys.argv[5])
        failed = []

        def one():
            try:
                exchange(host, port, n).close()
            except OSError as e:
                failed.append(e)

        threads = [threading.Thread(target=one) for _ in range(m)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failed:
            raise SystemExit(f"{len(failed)} of {m} connections failed: {failed[0]}")
        print("done", flush=True)
    elif mode == "closefirst":
        for _ in range(int(sys.argv[4])):
            socket.create_connection((host, port)).close()
        print("done", flush=True)
    elif mode == "latesend":
        k = int(sys.argv[4])
        srv = socket.socket(family(host), socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((host, port))
        srv.listen(1024)
        print("ready", flush=True)
        conns = [srv.accept()[0] for _ in range(k)]
        for c in conns:
            if c.recv(1):
                raise SystemExit("peer sent data")
        print("eof", flush=True)
        while not os.path.exists(sys.argv[5]):
            time.sleep(0.01)
        for c in conns:
            c.send(b"x")
        print("sent", flush=True)
        time.sleep(3600)
    elif mode == "hold":
        n, k = int(sys.argv[4]), int(sys.argv[5])
        conns = [exchange(host, port, n) for _ in range(k)]
        print("ready", flush=True)
        time.sleep(3600)
    elif mode == "more":
        n, k = int(sys.argv[4]), int(sys.argv[5])
        conns = [exchange(host, port, n) for _ in range(k)]
        print("ready", flush=True)
        while not os.path.exists(sys.argv[6]):
            time.sleep(0.01)
        for c in conns:
            c.sendall(b"z" * n)
        print("sent", flush=True)
        time.sleep(3600)
    elif mode == "refused":
        for _ in range(int(sys.argv[4])):
            try:
                socket.create_connection((host, port), timeout=5).close()
                raise SystemExit("connect unexpectedly succeeded")
            except ConnectionRefusedError:
                pass
        print("done", flush=True)
    elif mode == "fail":
        k, want = int(sys.argv[4]), sys.argv[5]
        got = []

        def attempt():
            try:
                socket.create_connection((host, port)).close()
                got.append("connected")
            except OSError as e:
                got.append(errno.errorcode.get(e.errno, str(e)))

        threads = [threading.Thread(target=attempt) for _ in range(k)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if got != [want] * k:
            raise SystemExit(f"expected {k} x {want}, got {got}")
        print("done", flush=True)
    elif mode == "bulk":
        c = socket.create_connection((host, port))
        end = time.time() + float(sys.argv[4])
        buf = b"z" * 65536
        sent = 0
        while time.time() < end:
            c.sendall(buf)
            sent += len(buf)
        c.close()
        print(f"sent {sent}", flush=True)
        print("done", flush=True)
    elif mode == "listen":
        name = sys.argv[4].encode().decode("unicode_escape").encode("latin-1")
        libc = ctypes.CDLL(None)
        libc.prctl(15, ctypes.c_char_p(name[:15]), 0, 0, 0)  # PR_SET_NAME
        srv = socket.socket(family(host), socket.SOCK_STREAM)
        srv.bind((host, port))
        srv.listen(8)
        print("ready", flush=True)
        time.sleep(3600)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
