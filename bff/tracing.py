"""OpenTelemetry traces, off unless the standard ``OTEL_*`` variables ask for them; the only code importing OTel.

**On** when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, or
``OTEL_TRACES_EXPORTER=otlp``; **off** otherwise, and always with ``OTEL_TRACES_EXPORTER=none`` or
``OTEL_SDK_DISABLED=true``. When on, each process (each ``bff serve`` worker: :func:`start` runs in its
lifespan, so nothing crosses a fork) has its own ``TracerProvider``: spans go through a
``BatchSpanProcessor`` to the OTLP/HTTP (protobuf) exporter. ``service.name`` is ``OTEL_SERVICE_NAME`` (or
``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``), else ``bff``; the SDK reads the rest of its standard
variables itself (endpoint, headers, timeout, compression, ``OTEL_BSP_*``, ``OTEL_TRACES_SAMPLER``).

The spans (``README.md``, "Tracing"):

- one SERVER span per request, ``"{METHOD} {route template}"`` (:class:`ServerSpan`, from
  :mod:`bff.web.edge`): ``http.request.method``, ``http.route``, ``http.response.status_code``,
  ``bff.request_id``;
- CLIENT spans under it for each session-store call (:func:`redis_span`), each provider call and each Kryptos
  API call (:func:`http_span`; these carry a W3C ``traceparent`` to the peer).

No span records a header, cookie, query string, body, Redis key or value, user id, token or secret, nor an
exception's message (only its type): every attribute is set here, from the few arguments these helpers take.

When off, no ``opentelemetry`` module is imported by this module, and each hook costs one check of a module
global: :func:`server_span` returns None, :func:`redis_span` and :func:`http_span` a shared no-op context.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger("bff.tracing")

_SHUTDOWN_TIMEOUT = 5.0  # seconds the lifespan waits for the last spans to be exported
# RFC 9110 §9 and PATCH (RFC 5789); any other method is recorded as "_OTHER" (OpenTelemetry's HTTP semantic
# conventions), so a client cannot put text of its choosing into an attribute or a span name.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
_NOTHING: contextlib.nullcontext[None] = contextlib.nullcontext()


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether ``environ`` turns tracing on (the module docstring); unknown exporters are warned about and off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip().lower() for e in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()}
    if "none" in exporters:
        return False
    if exporters - {"otlp"}:
        log.warning("OTEL_TRACES_EXPORTER names an exporter bff does not ship (only otlp): tracing stays off")
        return False
    return bool(exporters) or any(
        environ.get(name, "").strip() for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


class _Tracing:
    """This process's provider, tracer and W3C propagator, and the few OpenTelemetry functions the request path
    calls (bound once: an import statement per call costs more than it looks). Built only when tracing is on."""

    def __init__(self) -> None:
        from opentelemetry import context, trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        resource = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, as the SDK reads them
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "bff"}))
        self.pid = os.getpid()
        self.provider: TracerProvider = TracerProvider(resource=resource)  # sampler: OTEL_TRACES_SAMPLER
        # The exporter reads OTEL_EXPORTER_OTLP_[TRACES_]{ENDPOINT,HEADERS,TIMEOUT,COMPRESSION,...} itself.
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer: Tracer = self.provider.get_tracer("bff")
        # W3C Trace Context only (traceparent, tracestate), whatever OTEL_PROPAGATORS says: no baggage, which
        # would carry whatever a caller put in it.
        self.propagator = TraceContextTextMapPropagator()
        self.empty_context = context.Context
        self.attach = context.attach
        self.detach = context.detach
        self.current_span = trace.get_current_span
        self.in_context = trace.set_span_in_context
        self.non_recording = trace.NonRecordingSpan
        self.server, self.client, self.error = trace.SpanKind.SERVER, trace.SpanKind.CLIENT, trace.StatusCode.ERROR
        self.users = 1

    def server_span(self, method: str, headers: Mapping[bytes, bytes] | None) -> ServerSpan:
        parent = self.empty_context()  # empty: a new trace, whatever context this task carried
        if headers is not None:
            carrier = {
                name: headers[key].decode("latin-1")
                for name, key in (("traceparent", b"traceparent"), ("tracestate", b"tracestate"))
                if key in headers
            }
            parent = self.propagator.extract(carrier, context=parent)
        span = self.tracer.start_span(method, parent, self.server, {"http.request.method": method})
        return ServerSpan(self, span, self.attach(self.in_context(span, parent)), method)

    @contextlib.contextmanager
    def client_span(self, name: str, attributes: dict[str, Any]) -> Iterator[ClientSpan | None]:
        parent = self.current_span().get_span_context()
        if not parent.is_valid:
            # Outside a request (start-up, the change feed, the idle-grant sweep): no trace to join, and a root
            # span every half second from the change feed would only be noise.
            yield None
            return
        if not parent.trace_flags.sampled:
            # The request's trace is not sampled: no span to record, but its traceparent (saying "not sampled")
            # still goes along, so the peers make the same decision.
            yield ClientSpan(self, self.non_recording(parent))
            return
        span = self.tracer.start_span(name, None, self.client, attributes)
        token = self.attach(self.in_context(span))
        try:
            yield ClientSpan(self, span)
        except Exception as exc:  # the type only: an exception's text can carry a URL or a value
            span.set_attributes({"error.type": type(exc).__qualname__})
            span.set_status(self.error)
            raise
        finally:
            self.detach(token)
            span.end()


class ServerSpan:
    """The request's span, current until :meth:`finish`; its ids go into the access line."""

    __slots__ = ("_method", "_span", "_token", "_tracing", "span_id", "trace_id")

    def __init__(self, tracing: _Tracing, span: Span, token: Token[Context], method: str) -> None:
        self._tracing = tracing
        self._span = span
        self._token = token
        self._method = method
        ids = span.get_span_context()
        self.trace_id = format(ids.trace_id, "032x")
        self.span_id = format(ids.span_id, "016x")

    def finish(self, route: str | None, status: int, request_id: str) -> None:
        """Name the span after the matched route's template (never the raw path: it carries ids), end it."""
        span = self._span
        attributes: dict[str, str | int] = {"http.response.status_code": status, "bff.request_id": request_id}
        if route is not None:
            span.update_name(f"{self._method} {route}")
            attributes["http.route"] = route
        if status >= 500:  # a server span's 4xx is the client's doing (OpenTelemetry's HTTP conventions)
            attributes["error.type"] = str(status)
            span.set_status(self._tracing.error)
        span.set_attributes(attributes)
        self._tracing.detach(self._token)
        span.end()


class ClientSpan:
    """A CLIENT span while its call is in flight: puts ``traceparent`` on the request, records the status."""

    __slots__ = ("_span", "_tracing")

    def __init__(self, tracing: _Tracing, span: Span) -> None:
        self._tracing = tracing
        self._span = span

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """A copy of ``headers`` (the caller's may be shared) plus ``traceparent`` naming this span."""
        out = dict(headers)
        self._tracing.propagator.inject(out, context=self._tracing.in_context(self._span))
        return out

    def answered(self, status: int) -> None:
        if status >= 400:  # a client span's 4xx is an error (OpenTelemetry's HTTP conventions)
            self._span.set_attributes({"http.response.status_code": status, "error.type": str(status)})
            self._span.set_status(self._tracing.error)
        else:
            self._span.set_attributes({"http.response.status_code": status})


_active: _Tracing | None = None  # this process's tracing, while on


def start() -> None:
    """Turn tracing on for this process when the environment asks for it; idempotent (counted, for tests that
    run several apps in one process). Called by the lifespan (:func:`bff.services.container.open_services`)."""
    global _active
    if _active is not None and _active.pid == os.getpid():
        _active.users += 1
        return
    _active = None  # a provider inherited across a fork is the parent's: its export thread is not ours
    if wanted(os.environ):
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        if protocol not in (None, "", "http/protobuf"):
            log.warning("only the OTLP/HTTP (protobuf) exporter ships with bff: OTEL_EXPORTER_OTLP_PROTOCOL is ignored")
        _active = _Tracing()
        log.info("tracing on: spans are exported over OTLP/HTTP")


async def stop() -> None:
    """Undo one :func:`start`; the last one ends tracing and exports what is queued (bounded)."""
    global _active
    tracing = _active
    if tracing is None:
        return
    tracing.users -= 1
    if tracing.users > 0:
        return
    _active = None
    # shutdown() exports the queued spans, blocking: off the event loop, and not waited for forever.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.to_thread(tracing.provider.shutdown), timeout=_SHUTDOWN_TIMEOUT)


def server_span(method: str, headers: Mapping[bytes, bytes] | None) -> ServerSpan | None:
    """A request's span, or None when tracing is off. ``headers`` (the request's) are read only for
    ``traceparent``/``tracestate``; None starts a new trace. The caller calls :meth:`ServerSpan.finish`."""
    tracing = _active
    if tracing is None:
        return None
    return tracing.server_span(method if method in _METHODS else "_OTHER", headers)


def redis_span(command: str, procedure: str | None = None) -> contextlib.AbstractContextManager[ClientSpan | None]:
    """A span around one session-store call: the Redis command (and the script's name for EVALSHA), never the
    key (keys name session digests) nor a value."""
    tracing = _active
    if tracing is None:
        return _NOTHING
    attributes: dict[str, Any] = {"db.system.name": "redis", "db.operation.name": command}
    if procedure is not None:
        attributes["db.stored_procedure.name"] = procedure
    return tracing.client_span(f"redis {procedure or command}", attributes)


def http_span(
    method: str, url: object, *, peer: str, templated: bool = False
) -> contextlib.AbstractContextManager[ClientSpan | None]:
    """A span around one outgoing HTTP call to ``peer`` (``peer.service``): method, host and port; the path too
    when ``templated`` (it holds no ids: the provider's endpoints), never the query. The caller puts
    :meth:`ClientSpan.headers` on the request and reports :meth:`ClientSpan.answered`."""
    tracing = _active
    if tracing is None:
        return _NOTHING
    parts = urlsplit(str(url))
    attributes: dict[str, Any] = {"http.request.method": method, "server.address": parts.hostname or ""}
    attributes["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
    attributes["peer.service"] = peer
    name = method
    if templated:
        attributes["url.template"] = parts.path
        name = f"{method} {parts.path}"
    return tracing.client_span(name, attributes)
