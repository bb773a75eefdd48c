"""Streamer's shared library: what every service, the operator and the SDKs stand on.

The public surface is small and stable; submodules hold the details:

- :mod:`streamer.config` — ``load_settings()``, ``Settings``, ``ConfigError``
- :mod:`streamer.protocol` — the WebSocket wire protocol (parse frames, build messages, codes)
- :mod:`streamer.auth` — JWT verification (``TokenVerifier``) and dev tokens (``make_token``)
- :mod:`streamer.store` — DynamoDB tables and stores (``Store.open()``)
- :mod:`streamer.delivery` — reach any connection (``Delivery``)
- :mod:`streamer.registry` — which handler serves an action
- :mod:`streamer.sdk` — write a handler (``Action``, ``serve()``)
- :mod:`streamer.client` — call Streamer from Python (``StreamerClient``)
- :mod:`streamer.logs`, :mod:`streamer.metrics`, :mod:`streamer.rpc` — observability and gRPC plumbing

Submodules are imported on use, so importing ``streamer`` costs nothing.
"""

__version__ = "0.1.0"
