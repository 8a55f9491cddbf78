"""Development tools for bff, kept out of the shipped package and the image.

* :mod:`bff_dev.emulator`: the Kryptos emulator (OpenID provider, data API, connect API), faithful to
  what Kryptos documents for its OpenID provider and APIs; it serves the tests and the demo;
* :mod:`bff_dev.demo`: ``bff dev``, the emulator + bff + the demo SPA (``static/``) on one origin;
* :mod:`bff_dev.openapi`: the OpenAPI document of bff's endpoints (``python -m bff_dev.openapi``).
"""
