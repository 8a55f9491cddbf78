"""bff's own HTTP interface as an OpenAPI 3.1 document (a plain dict), kept in the repo as ``openapi.json``.

The forwarded ``/api/...`` operations are generated from :data:`bff.proxy.routes.ROUTES`, so the document
cannot drift from what the forwarder validates: query parameters with their types and bounds, path
parameters with their patterns, and JSON bodies with exactly the fields accepted (``additionalProperties``
false). The ``/auth/*`` (``/auth/sessions`` included), ``/connect/*``, the administrator's grant revocation
and force sign-out, and the health operations are written out here from their handlers.

Every error ``bff`` itself produces is ``application/problem+json`` (RFC 9457) with a stable ``code`` and a
``type`` of ``urn:bff:problem:<code>``; forwarded calls may also answer with Kryptos's own JSON and status
(``application/json``), passed through unchanged. ``bff dev`` serves the document at ``/openapi.json``;
``bff serve`` does not. Regenerate the committed copy with::

    python -m bff_dev.openapi > openapi.json
"""

from bff_dev.openapi.document import build_document, main, render

__all__ = ["build_document", "main", "render"]
