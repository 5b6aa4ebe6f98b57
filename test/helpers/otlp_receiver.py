#!/usr/bin/env python3
"""A test OTLP metrics receiver built on the official OpenTelemetry
protobuf bindings (opentelemetry-proto): it decodes http/protobuf and
http/json requests with the generated classes and google.protobuf's JSON
mapping, or serves the generated gRPC MetricsService (grpcio), and prints
each request as one JSON line on stdout.

  otlp_receiver.py [--grpc [--identity-only]] [--fail-first-requests N] [--tls CERT KEY [--client-ca CA]]
    --grpc: serve OTLP/gRPC instead of OTLP/HTTP; --identity-only: refuse compressed
      messages (gRPC hides grpc-encoding from handlers, so this is how a test sees gzip)
    --fail-first-requests: answer 503 (gRPC: UNAVAILABLE) to the first N requests
    --tls: serve HTTPS (gRPC over TLS); --client-ca: require a client certificate signed by CA (mTLS)

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


def take_status():
    """True when this request is to be failed (the first N)."""
    global FAIL_LEFT
    with LOCK:
        fail = FAIL_LEFT > 0
        FAIL_LEFT = max(0, FAIL_LEFT - 1)
    return fail


def emit(record):
    line = json.dumps(record) + "\n"
    with LOCK:  # handler threads must not interleave their lines
        sys.stdout.write(line)
        sys.stdout.flush()


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
        status = 503 if take_status() else 200
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
        emit(record)
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


def serve_grpc(tls, client_ca, identity_only):
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc

    class Servicer(metrics_service_pb2_grpc.MetricsServiceServicer):
        def Export(self, request, context):
            metadata = dict(context.invocation_metadata())
            fail = take_status()
            emit({
                "path": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                "format": "grpc",
                # As the HTTP status it stands for, so tests read both modes alike: UNAVAILABLE is 503.
                "status": 503 if fail else 200,
                "authorization": metadata.get("authorization"),
                "encoding": None,  # not visible here: see --identity-only
                "request": json_format.MessageToDict(request),
            })
            if fail:
                context.abort(grpc.StatusCode.UNAVAILABLE, "failing the first requests, as asked")
            return ExportMetricsServiceResponse()

    # Bit 0 is identity: with only it enabled, gzip-compressed calls fail before Export.
    options = [("grpc.compression_enabled_algorithms_bitset", 1)] if identity_only else []
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Servicer(), srv)
    if tls:
        with open(tls[1], "rb") as k, open(tls[0], "rb") as c:
            pair = (k.read(), c.read())
        ca = open(client_ca, "rb").read() if client_ca else None
        port = srv.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=bool(ca)))
    else:
        port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    print(f"listening {port}", flush=True)
    srv.wait_for_termination()


def main():
    global FAIL_LEFT
    args = sys.argv[1:]
    tls = client_ca = None
    grpc_mode = identity_only = False
    while args:
        flag = args.pop(0)
        if flag == "--grpc":
            grpc_mode = True
        elif flag == "--identity-only":
            identity_only = True
        elif flag == "--fail-first-requests":
            FAIL_LEFT = int(args.pop(0))
        elif flag == "--tls":
            tls = (args.pop(0), args.pop(0))
        elif flag == "--client-ca":
            client_ca = args.pop(0)
    if grpc_mode:
        serve_grpc(tls, client_ca, identity_only)
        return
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
