"""A webhook receiver at ``/hooks/{name}``: it records each request (headers and body as
they arrived) and answers 200.

It does not check signatures: that is the tests' job, with the Standard Webhooks
reference library, so that the check is independent of both the sender and this fake.
Apprise's ``json://`` URLs post here too (``json://<host>:<port>/hooks/<name>``). Faults
(a 429 with ``Retry-After``, a 5xx, a slow answer) are scripted with ``FakeApis.fail`` and
``FakeApis.slow`` on the api ``webhook``; requests are keyed by ``name``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from fake_notify.server import FakeApis, Received

API: Final = "webhook"


async def receive(fakes: FakeApis, received: Received) -> Response:
    return JSONResponse({"received": True})


def routes(fakes: FakeApis) -> list[BaseRoute]:
    async def endpoint(request: Request) -> Response:
        return await fakes.take(API, request.path_params["name"], request, receive)

    return [Route("/hooks/{name}", endpoint, methods=["POST"])]
