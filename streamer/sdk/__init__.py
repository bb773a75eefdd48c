"""The handler SDK: write one :class:`Action` per action, then call :func:`serve`.

::

    from streamer.sdk import Action, serve

    class Echo(Action):
        name = "echo"
        schema = {"type": "object", "required": ["message"],
                  "properties": {"message": {"type": "string"}}}

        async def process(self, request, progress):
            return {"message": request.payload["message"]}

    serve(actions=[Echo()], name="echo-handler")

See docs/handlers.md for the whole contract.
"""

from __future__ import annotations

from streamer.sdk.action import Action, PermanentError, ProgressFn, Request, RetryableError, ValidationError
from streamer.sdk.loading import HandlerLoadError, load_actions
from streamer.sdk.server import HandlerServer, HandlerServicer, registry_document, serve

__all__ = [
    "Action",
    "HandlerLoadError",
    "HandlerServer",
    "HandlerServicer",
    "PermanentError",
    "ProgressFn",
    "Request",
    "RetryableError",
    "ValidationError",
    "load_actions",
    "registry_document",
    "serve",
]
