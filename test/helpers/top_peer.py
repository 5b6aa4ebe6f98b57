#!/usr/bin/env python3
"""Peers of known behaviour for the `kerntap top` tests (test/integration/top.test.ts).

  server HOST PORT COMM IN OUT      accept forever: read IN bytes, send OUT bytes, keep the connection
                                    until the peer closes it
  client HOST PORT COMM OUT IN N HOLD [CHILD_COMM]
                                    N connections: send OUT bytes, read IN bytes; with CHILD_COMM, a
                                    forked child renamed CHILD_COMM does the sending and reading on the
                                    parent's sockets; prints "ready", then keeps them HOLD seconds
                                    (or until killed: HOLD < 0), closes them and exits
  refused HOST PORT N               N connects to a closed port (each must fail with ECONNREFUSED)
  timeout HOST PORT N               N connects at once whose SYNs are dropped (each must time out)

COMM is written to /proc/self/comm, so it may hold any bytes (escape sequences too), as given
in the argument with backslash escapes (\\x1b and the like) decoded.
"""
import errno
import os
import socket
import sys
import threading
import time


def set_comm(raw):
    name = raw.encode('latin-1').decode('unicode_escape').encode('latin-1')
    with open('/proc/self/comm', 'wb') as f:
        f.write(name[:15])


def read_exactly(s, n):
    got = 0
    while got < n:
        chunk = s.recv(min(65536, n - got))
        if not chunk:
            raise SystemExit(f'peer closed after {got} of {n} bytes')
        got += len(chunk)


def server(host, port, comm, n_in, n_out):
    set_comm(comm)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, int(port)))
    ls.listen(128)
    print('listening', flush=True)

    def serve(c):
        read_exactly(c, int(n_in))
        c.sendall(b'y' * int(n_out))
        while c.recv(65536):
            pass
        c.close()

    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def client(host, port, comm, n_out, n_in, count, hold, child_comm=None):
    set_comm(comm)
    socks = [socket.create_connection((host, int(port))) for _ in range(int(count))]

    def exchange():
        for s in socks:
            s.sendall(b'x' * int(n_out))
            read_exactly(s, int(n_in))

    if child_comm:
        pid = os.fork()
        if pid == 0:
            set_comm(child_comm)
            exchange()
            os._exit(0)
        os.waitpid(pid, 0)
    else:
        exchange()
    print('ready', flush=True)
    if float(hold) < 0:
        while True:
            time.sleep(3600)
    time.sleep(float(hold))
    for s in socks:
        s.close()


def refused(host, port, count):
    for _ in range(int(count)):
        s = socket.socket()
        err = s.connect_ex((host, int(port)))
        s.close()
        if err != errno.ECONNREFUSED:
            raise SystemExit(f'connect to {host}:{port}: {os.strerror(err)}, expected refused')
    print('done', flush=True)


def timeout(host, port, count):
    errors = []

    def one():
        s = socket.socket()
        errors.append(s.connect_ex((host, int(port))))
        s.close()

    threads = [threading.Thread(target=one) for _ in range(int(count))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if any(e != errno.ETIMEDOUT for e in errors):
        raise SystemExit(f'connects to {host}:{port}: {[os.strerror(e) for e in errors]}, expected timeouts')
    print('done', flush=True)


if __name__ == '__main__':
    mode, *args = sys.argv[1:]
    print(f'pid {os.getpid()}', flush=True)
    {'server': server, 'client': client, 'refused': refused, 'timeout': timeout}[mode](*args)
