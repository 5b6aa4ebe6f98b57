#!/usr/bin/env python3
"""HTTP peers with known behaviour for the http collector's tests.

  serve PORT [PORT...]      HTTP/1.1 server (one thread per connection) on 127.0.0.1:
                            /ok 200, /missing 404, /error 500, /slow?ms=N 202 after N ms,
                            /chunked 200 chunked (a chunk's data starts like a status line),
                            POST /upload 201 (answers Expect: 100-continue); prints "ready"
  client PORT PLAN          runs PLAN (JSON list of {"path", "n", "conn": "keepalive"|"new",
                            "method", "status", "expect100"}), checks every status, exits 0
  hold PORT N FILE          one keep-alive connection: GET /ok, print "ready", wait for FILE
                            to exist, then N more GET /ok on the same connection
  pipeline PORT N           N pipelined GET / in one write on one connection, then reads
                            until N responses arrived
  raw PORT HEX[,HEX...] ... one connection per argument; each HEX payload is sent and a
                            response awaited (read until the server closes or a full response)
"""
import http.client
import json
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

HOST = '127.0.0.1'


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def reply(self, status, body=b'x' * 64):
        self.send_response(status)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == '/ok':
            self.reply(200)
        elif url.path == '/error':
            self.reply(500)
        elif url.path == '/slow':
            time.sleep(int(parse_qs(url.query)['ms'][0]) / 1000)
            self.reply(202)
        elif url.path == '/chunked':
            self.send_response(200)
            self.send_header('Transfer-Encoding', 'chunked')
            self.end_headers()
            for data in (b'HTTP/1.1 200 OK\r\n', b'more body'):
                self.wfile.write(b'%x\r\n' % len(data))
                self.wfile.write(data)
                self.wfile.write(b'\r\n')
            self.wfile.write(b'0\r\n\r\n')
        else:
            self.reply(404)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length', '0')))
        self.reply(201 if self.path == '/upload' else 404, body[:16])


def serve(ports):
    servers = [ThreadingHTTPServer((HOST, int(p)), Handler) for p in ports]
    import threading
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print('ready', flush=True)
    servers[0].serve_forever()


def client(port, plan):
    keep = None
    for step in json.loads(plan):
        for _ in range(step['n']):
            if step.get('conn', 'keepalive') == 'keepalive':
                keep = keep or http.client.HTTPConnection(HOST, int(port))
                conn = keep
            else:
                conn = http.client.HTTPConnection(HOST, int(port))
            headers, body = {}, None
            if step.get('expect100'):
                headers['Expect'] = '100-continue'
                body = b'y' * 100
            conn.request(step.get('method', 'GET'), step['path'], body=body, headers=headers)
            res = conn.getresponse()
            res.read()
            if res.status != step['status']:
                sys.exit(f"{step['path']}: got {res.status}, want {step['status']}")
            if conn is not keep:
                conn.close()
    if keep:
        keep.close()


def hold(port, n, go):
    import os
    conn = http.client.HTTPConnection(HOST, int(port))
    for i in range(int(n) + 1):
        conn.request('GET', '/ok')
        res = conn.getresponse()
        res.read()
        if res.status != 200:
            sys.exit(f'/ok: got {res.status}')
        if i == 0:
            print('ready', flush=True)
            while not os.path.exists(go):
                time.sleep(0.05)
    conn.close()


def pipeline(port, n):
    s = socket.create_connection((HOST, int(port)))
    s.settimeout(10)
    s.sendall(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n' * int(n))
    got = b''
    while got.count(b'HTTP/1.1 200') < int(n):
        chunk = s.recv(65536)
        if not chunk:
            sys.exit(f'closed after {got.count(b"HTTP/1.1 200")} responses')
        got += chunk
    s.close()


def raw(port, connections):
    for spec in connections:
        s = socket.create_connection((HOST, int(port)))
        s.settimeout(5)
        for payload in spec.split(','):
            s.sendall(bytes.fromhex(payload))
            got = b''
            while True:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                got += chunk
                head, sep, rest = got.partition(b'\r\n\r\n')
                length = [int(v) for k, v in (l.split(b':', 1) for l in head.split(b'\r\n')[1:] if b':' in l)
                          if k.strip().lower() == b'content-length']
                if sep and length and len(rest) >= length[0]:
                    break
        s.close()


if __name__ == '__main__':
    mode = sys.argv[1]
    if mode == 'serve':
        serve(sys.argv[2:])
    elif mode == 'client':
        client(sys.argv[2], sys.argv[3])
    elif mode == 'hold':
        hold(sys.argv[2], sys.argv[3], sys.argv[4])
    elif mode == 'pipeline':
        pipeline(sys.argv[2], sys.argv[3])
    elif mode == 'raw':
        raw(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(f'unknown mode {mode}')
