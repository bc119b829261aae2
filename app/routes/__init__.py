"""One router per resource."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.routing import APIRoute

__all__ = ["answer_head"]


def answer_head(router: APIRouter) -> None:
    """Make every GET route of ``router`` answer HEAD: the same headers, no body.

    The HEAD routes go after all others, so they cost GET requests nothing,
    and stay out of the OpenAPI document, which describes the GETs. The
    server drops the body of a HEAD answer; raw answers do not make one.
    """
    for route in list(router.routes):
        if not isinstance(route, APIRoute):
            continue
        methods = route.methods or set()
        if "GET" in methods and "HEAD" not in methods:
            router.add_api_route(
                route.path.removeprefix(router.prefix),
                route.endpoint,
                methods=["HEAD"],
                response_class=route.response_class,
                response_model=route.response_model,
                dependencies=route.dependencies,
                include_in_schema=False,
            )
