"""An OTLP receiver for tests: what an OpenTelemetry exporter sent, as it arrived.

One :class:`Receiver` is a set of loopback listeners, each named, so that a test can point
each signal somewhere else and see where it went:

- ``grpc``, ``grpc_b``: OTLP/gRPC (TraceService, MetricsService, LogsService ``Export``),
  plaintext. gRPC hides how a message was compressed from the servicer (``grpc-encoding`` is
  not in the invocation metadata), so these ports are a small TCP relay in front of the gRPC
  server that reads the HTTP/2 DATA frames going in and notes each gRPC message's
  compressed-flag byte (``Receiver.grpc_compressed``);
- ``http``: OTLP/HTTP, ``POST`` of ``application/x-protobuf`` on any path, ``gzip`` bodies
  decoded. The signal is the path's last segment (``/v1/traces``, ``/custom/traces``);
- with ``certs``, ``grpc_tls`` and ``http_tls`` the same over TLS, and with ``mutual`` they
  refuse a client without a certificate signed by the test CA (tests/certs.py). The gRPC
  ports count connections (``Receiver.connections``), so that an exporter whose handshake
  failed still shows it tried.

``stall_s`` holds every request that long before answering, and notes whether the client was
still waiting at the end (``Received.abandoned``): how a test sees an exporter's timeout.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

SIGNALS = ("traces", "metrics", "logs")
_REQUEST_TYPES: dict[str, type[Message]] = {
    "traces": trace_service_pb2.ExportTraceServiceRequest,
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
    "logs": logs_service_pb2.ExportLogsServiceRequest,
}


def value_of(v: AnyValue) -> Any:
    """An OTLP attribute value as Python (arrays as tuples)."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(value_of(x) for x in v.array_value.values)
    if kind == "kvlist_value":
        return attributes(v.kvlist_value.values)
    return getattr(v, kind)


def attributes(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        assert isinstance(kv, KeyValue)
        out[kv.key] = value_of(kv.value)
    return out


@dataclass
class Received:
    """One export request as it arrived."""

    listener: str  # the Receiver's listener: grpc, grpc_b, http, grpc_tls, http_tls
    transport: str  # "grpc" or "http"
    path: str  # the gRPC method or the HTTP path
    signal: str  # traces, metrics, logs; "" for an HTTP path naming none
    headers: dict[str, str]  # gRPC metadata or HTTP headers, keys in lower case
    content_encoding: str  # HTTP only: the Content-Encoding header ("" when none)
    at: float  # time.time() on arrival
    message: Message | None  # the decoded request; None when it did not decode
    abandoned: bool = False  # with stall_s: the client had gone when the stall ended

    def resources(self) -> list[dict[str, Any]]:
        """The resource attributes of each resource in the request."""
        if self.message is None:
            return []
        groups = getattr(self.message, f"resource_{_FIELD[self.signal]}")
        return [attributes(g.resource.attributes) for g in groups]

    def spans(self) -> list[Span]:
        if self.signal != "traces" or self.message is None:
            return []
        req = self.message
        assert isinstance(req, trace_service_pb2.ExportTraceServiceRequest)
        return [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def metrics(self) -> list[Metric]:
        if self.signal != "metrics" or self.message is None:
            return []
        req = self.message
        assert isinstance(req, metrics_service_pb2.ExportMetricsServiceRequest)
        return [m for rm in req.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]

    def log_records(self) -> list[LogRecord]:
        if self.signal != "logs" or self.message is None:
            return []
        req = self.message
        assert isinstance(req, logs_service_pb2.ExportLogsServiceRequest)
        return [r for rl in req.resource_logs for sl in rl.scope_logs for r in sl.log_records]


_FIELD = {"traces": "spans", "metrics": "metrics", "logs": "logs"}


@dataclass
class Receiver:
    """Loopback OTLP listeners recording every request (see the module's docstring)."""

    certs: dict[str, Path] | None = None  # tests/certs.make_certs' files, for the TLS pair
    mutual: bool = False  # the TLS listeners require a client certificate
    stall_s: float = 0.0
    requests: list[Received] = field(default_factory=list)
    grpc_compressed: list[tuple[str, bool]] = field(default_factory=list)  # (listener, flag)
    # TCP connections per gRPC listener: an exporter that tried, even if TLS or the
    # handshake then failed and no request arrived.
    connections: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _inflight: int = 0
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("grpc", "grpc_b"):
            inner = self._grpc_server(name, None)
            self.ports[name] = self._relay(name, inner)
        self.ports["http"] = self._http_server("http", None)
        if self.certs is not None:
            inner = self._grpc_server("grpc_tls", self.certs)
            self.ports["grpc_tls"] = self._relay("grpc_tls", inner, sniff=False)
            self.ports["http_tls"] = self._http_server("http_tls", self.certs)

    def close(self) -> None:
        for close in reversed(self._closers):
            close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _record(self, r: Received) -> None:
        with self._lock:
            self.requests.append(r)

    def _begin(self) -> None:
        with self._lock:
            self._inflight += 1

    def _end(self) -> None:
        with self._lock:
            self._inflight -= 1

    def settle(self, timeout_s: float) -> None:
        """Waits (at most ``timeout_s``) until no request is being held: a request its client
        abandoned is recorded only when its stall ends."""
        end = time.monotonic() + timeout_s
        while self._inflight and time.monotonic() < end:
            time.sleep(0.02)

    def _stall(self, still_there: Callable[[], bool]) -> bool:
        """Holds a request ``stall_s``; True when the client gave up meanwhile."""
        if self.stall_s <= 0:
            return False
        end = time.monotonic() + self.stall_s
        while time.monotonic() < end:
            time.sleep(0.05)
        return not still_there()

    # --- OTLP/gRPC ---

    def _grpc_server(self, name: str, certs: dict[str, Path] | None) -> int:
        receiver = self

        def export(
            signal: str, response: Message
        ) -> Callable[[Message, grpc.ServicerContext], Message]:
            def handler(request: Message, context: grpc.ServicerContext) -> Message:
                receiver._begin()
                r = Received(
                    listener=name,
                    transport="grpc",
                    path=f"{signal}/Export",
                    signal=signal,
                    headers={k.lower(): str(v) for k, v in context.invocation_metadata()},
                    content_encoding="",
                    at=time.time(),
                    message=request,
                )
                r.abandoned = receiver._stall(context.is_active)
                receiver._record(r)
                receiver._end()
                return response

            return handler

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            Export = staticmethod(export("traces", trace_service_pb2.ExportTraceServiceResponse()))

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            Export = staticmethod(
                export("metrics", metrics_service_pb2.ExportMetricsServiceResponse())
            )

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            Export = staticmethod(export("logs", logs_service_pb2.ExportLogsServiceResponse()))

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)  # type: ignore[no-untyped-call]
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)  # type: ignore[no-untyped-call]
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)  # type: ignore[no-untyped-call]
        if certs is None:
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            creds = grpc.ssl_server_credentials(
                [(certs["server.key"].read_bytes(), certs["server.pem"].read_bytes())],
                root_certificates=certs["ca.pem"].read_bytes() if self.mutual else None,
                require_client_auth=self.mutual,
            )
            port = server.add_secure_port("127.0.0.1:0", creds)
        server.start()

        def close() -> None:
            server.stop(0).wait()

        self._closers.append(close)
        return port

    def _relay(self, name: str, inner_port: int, sniff: bool = True) -> int:
        """A TCP relay to ``inner_port`` that counts connections and, with ``sniff`` (not
        through TLS), notes the compressed flag of each gRPC message the client sends (the
        first byte of the message's 5-byte prefix, at the start of the first DATA frame of
        each HTTP/2 stream)."""
        listener = socket.create_server(("127.0.0.1", 0))
        port: int = listener.getsockname()[1]
        closing = threading.Event()

        def pump(src: socket.socket, dst: socket.socket, sniff: bool) -> None:
            buf = b""
            preface_left = 24  # "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            started: set[int] = set()
            try:
                while chunk := src.recv(65536):
                    dst.sendall(chunk)
                    if not sniff:
                        continue
                    buf += chunk
                    if preface_left:
                        cut = min(preface_left, len(buf))
                        buf, preface_left = buf[cut:], preface_left - cut
                    while len(buf) >= 9:
                        length = int.from_bytes(buf[:3], "big")
                        if len(buf) < 9 + length:
                            break
                        kind, flags = buf[3], buf[4]
                        stream = struct.unpack(">I", buf[5:9])[0] & 0x7FFFFFFF
                        payload = buf[9 : 9 + length]
                        buf = buf[9 + length :]
                        if kind != 0 or stream in started or not payload:
                            continue
                        if flags & 0x8:  # PADDED: the first byte is the pad length
                            payload = payload[1:]
                        if payload:
                            started.add(stream)
                            with self._lock:
                                self.grpc_compressed.append((name, payload[0] == 1))
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        def accept() -> None:
            while not closing.is_set():
                try:
                    client, _ = listener.accept()
                except OSError:
                    return
                with self._lock:
                    self.connections[name] = self.connections.get(name, 0) + 1
                try:
                    upstream = socket.create_connection(("127.0.0.1", inner_port))
                except OSError:
                    client.close()
                    continue
                for args in ((client, upstream, sniff), (upstream, client, False)):
                    threading.Thread(target=pump, args=args, daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()

        def close() -> None:
            closing.set()
            listener.close()

        self._closers.append(close)
        return port

    # --- OTLP/HTTP ---

    def _http_server(self, name: str, certs: dict[str, Path] | None) -> int:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                receiver._begin()
                try:
                    self._export()
                finally:
                    receiver._end()

            def _export(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                signal = self.path.rstrip("/").rsplit("/", 1)[-1]
                message: Message | None = None
                if signal in _REQUEST_TYPES:
                    message = _REQUEST_TYPES[signal]()
                    try:
                        message.ParseFromString(body)
                    except DecodeError:
                        message = None
                else:
                    signal = ""
                r = Received(
                    listener=name,
                    transport="http",
                    path=self.path,
                    signal=signal,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    content_encoding=encoding,
                    at=time.time(),
                    message=message,
                )
                r.abandoned = receiver._stall(self._client_still_there)
                receiver._record(r)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _client_still_there(self) -> bool:
                # A client that gave up has closed its end: a peek reads end-of-file.
                sock = self.connection
                try:
                    sock.setblocking(False)
                    try:
                        return bool(sock.recv(1, socket.MSG_PEEK))
                    finally:
                        sock.setblocking(True)
                except (BlockingIOError, ssl.SSLWantReadError, ValueError):
                    # ValueError: an SSL socket takes no peek; TLS rows do not stall
                    return True
                except OSError:
                    return False

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the exporters' requests are the record; no line per request

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if certs is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(certs["server.pem"], certs["server.key"])
            if self.mutual:
                ctx.load_verify_locations(certs["ca.pem"])
                ctx.verify_mode = ssl.CERT_REQUIRED
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()

        def close() -> None:
            server.shutdown()
            server.server_close()

        self._closers.append(close)
        port: int = server.server_address[1]
        return port
