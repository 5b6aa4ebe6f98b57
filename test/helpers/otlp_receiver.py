#!/usr/bin/env python3
"""A test OTLP/HTTP metrics receiver built on the official OpenTelemetry
protobuf bindings (opentelemetry-proto): it decodes http/protobuf and
http/json requests with the generated classes and google.protobuf's JSON
mapping, and prints each request as one JSON line on stdout.

  otlp_receiver.py [--fail-first-requests N] [--tls CERT KEY [--client-ca CA]]
    --fail-first-requests: answer 503 to the first N requests
    --tls: serve HTTPS; --client-ca: require a client certificate signed by CA (mTLS)

Prints "listening <port>" first. Bound to 127.0.0.1 on a free port.
"""
import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

FAIL_LEFT = 0
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def read_body(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length", "0")))

    def do_POST(self):
        body = self.read_body()
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        ctype = self.headers.get("content-type", "")
        global FAIL_LEFT
        with LOCK:
            status = 503 if FAIL_LEFT > 0 else 200
            FAIL_LEFT = max(0, FAIL_LEFT - 1)
        req = ExportMetricsServiceRequest()
        if ctype.startswith("application/x-protobuf"):
            req.ParseFromString(body)
            fmt = "protobuf"
        elif ctype.startswith("application/json"):
            json_format.Parse(body, req)
            fmt = "json"
        else:
            self.send_response(415)
            self.end_headers()
            return
        record = {
            "path": self.path,
            "format": fmt,
            "status": status,
            "authorization": self.headers.get("authorization"),
            "encoding": self.headers.get("content-encoding"),
            "request": json_format.MessageToDict(req),
        }
        line = json.dumps(record) + "\n"
        with LOCK:  # handler threads must not interleave their lines
            sys.stdout.write(line)
            sys.stdout.flush()
        resp = ExportMetricsServiceResponse()
        if fmt == "json":
            payload, rtype = json_format.MessageToJson(resp).encode(), "application/json"
        else:
            payload, rtype = resp.SerializeToString(), "application/x-protobuf"
        self.send_response(status)
        self.send_header("content-type", rtype)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client that gave up (its timeout, or kerntap shutting down) is expected.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def main():
    global FAIL_LEFT
    args = sys.argv[1:]
    tls = client_ca = None
    while args:
        flag = args.pop(0)
        if flag == "--fail-first-requests":
            FAIL_LEFT = int(args.pop(0))
        elif flag == "--tls":
            tls = (args.pop(0), args.pop(0))
        elif flag == "--client-ca":
            client_ca = args.pop(0)
    srv = Server(("127.0.0.1", 0), Handler)
    if tls:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*tls)
        if client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(client_ca)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print(f"listening {srv.server_address[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
