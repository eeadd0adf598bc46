"""The console's HTTP edge: Starlette routes rendering Jinja2 pages from the services' APIs.

Security, in one place: the API key lives only in the server-side session; the browser holds an
opaque session id in an HttpOnly, SameSite=Strict cookie; every POST carries the session's CSRF
token; rendered message bodies are shown in a sandboxed iframe (no scripts, an opaque origin);
every response forbids framing, sniffing, referrers and any script but the console's own file."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cjo_client import Client
from cjo_console.adapters.clients import ClientPool
from cjo_console.adapters.services import Services, is_unauthenticated
from cjo_console.api import views
from cjo_console.config import ConsoleSettings
from cjo_console.domain.cache import TtlCache
from cjo_console.domain.sessions import Session, SessionSealer
from cjo_platform.logging import get_logger

HERE = Path(__file__).parent
COOKIE = "cjo_console_session"
JOURNEY_ACTIONS = ("pause", "resume", "archive")
# What a refused call shows as; anything else is the suite failing (502).
_HTTP_STATUS = {grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.FAILED_PRECONDITION: 409,
                grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.INVALID_ARGUMENT: 400}
MAX_CLIENTS = 64
SECURITY_HEADERS = {
    # srcdoc iframes inherit this policy too: no script runs in a rendered message either.
    "content-security-policy": ("default-src 'none'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' data: https:; connect-src 'self'; "
                                "frame-src 'self'; form-action 'self'; base-uri 'none'; "
                                "frame-ancestors 'none'"),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}

log = get_logger("cjo_console")
Handler = Callable[[Request, Session, Services], Awaitable[Response]]


class NotFound(Exception):
    pass


def now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: ConsoleSettings) -> Starlette:
    sealer = SessionSealer(settings.session_secrets, settings.session_lifetime,
                           settings.session_idle_timeout)
    # One client (its channels) per API key in use on this replica, the least recently used
    # dropped past MAX_CLIENTS (closed once its requests end); keyed by the key's digest so no
    # map holds keys in the clear.
    clients = ClientPool(MAX_CLIENTS)
    counts_cache = TtlCache(timedelta(seconds=settings.counts_cache_seconds))

    def key_id(session: Session) -> str:
        return hashlib.sha256(session.api_key.encode()).hexdigest()

    def client_for(session: Session) -> AbstractAsyncContextManager[Client]:
        return clients.lease(key_id(session), lambda: Client(
            settings.endpoints, session.api_key, secure=settings.tls, ca_file=settings.ca_file))

    async def forget(session: Session) -> None:
        await clients.forget(key_id(session))

    def current(request: Request) -> Session | None:
        return sealer.open(request.cookies.get(COOKIE), now())

    templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                            autoescape=select_autoescape(default=True), enable_async=False)

    def render(request: Request, template: str, session: Session | None, status: int = 200,
               **context: Any) -> HTMLResponse:
        body = templates.get_template(template).render(
            session=session, csrf=session.csrf_token if session else "",
            path=request.url.path, refresh_seconds=settings.refresh_seconds, **context)
        return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)

    def set_cookie(response: Response, session: Session) -> Response:
        # Resealed on every answer: the idle timeout counts from the last request.
        response.set_cookie(COOKIE, sealer.seal(sealer.touch(session, now())), httponly=True,
                            samesite="strict", secure=settings.secure_cookies, path="/",
                            max_age=int(settings.session_lifetime.total_seconds()))
        return response

    def signed_out(response: Response) -> Response:
        response.delete_cookie(COOKIE, path="/")
        return response

    def signed_in(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Runs ``handler`` with the session's key; without one, off to the sign-in page. A
        key revoked since sign-in ends the session the same way."""
        async def endpoint(request: Request) -> Response:
            session = current(request)
            if session is None or not session.signed_in:
                if request.url.path.endswith(".json"):
                    return JSONResponse({"error": "signed out"}, status_code=401,
                                        headers=SECURITY_HEADERS)
                return signed_out(RedirectResponse("/sign-in", status_code=303,
                                                   headers=SECURITY_HEADERS))
            if request.method == "POST":
                form = await request.form()
                if not session.csrf_ok(str(form.get("csrf_token", ""))):
                    return PlainTextResponse("CSRF token missing or wrong", status_code=403,
                                             headers=SECURITY_HEADERS)
            try:
                async with client_for(session) as client:
                    response = await handler(request, session, Services(client))
                return set_cookie(response, session)
            except NotFound as exc:
                return render(request, "error.html", session, 404, title="Not found",
                              detail=str(exc))
            except grpc.aio.AioRpcError as exc:
                if is_unauthenticated(exc):
                    await forget(session)
                    return signed_out(RedirectResponse("/sign-in", status_code=303,
                                                       headers=SECURITY_HEADERS))
                status = _HTTP_STATUS.get(exc.code(), 502)
                log.warning("console call failed", path=request.url.path,
                            code=exc.code().name, detail=exc.details())
                if request.url.path.endswith(".json"):
                    return JSONResponse({"error": exc.details()}, status_code=status,
                                        headers=SECURITY_HEADERS)
                return render(request, "error.html", session, status,
                              title=exc.code().name.replace("_", " ").capitalize(),
                              detail=exc.details())
        return endpoint

    # Sign-in
    async def sign_in_page(request: Request) -> Response:
        session = current(request)
        if session is not None and session.signed_in:
            return RedirectResponse("/journeys", status_code=303, headers=SECURITY_HEADERS)
        if session is None:
            session = sealer.new(now())
        return set_cookie(render(request, "sign_in.html", session, error=""), session)

    async def sign_in(request: Request) -> Response:
        session = current(request)
        form = await request.form()
        if session is None or not session.csrf_ok(str(form.get("csrf_token", ""))):
            return PlainTextResponse("CSRF token missing or wrong: reload the sign-in page",
                                     status_code=403, headers=SECURITY_HEADERS)
        api_key = str(form.get("api_key", "")).strip()
        error, can_change = "", False
        if not api_key:
            error = "Enter an API key."
        else:
            try:
                # Any call the key is allowed to make proves it; listing journeys is the
                # console's first page anyway.
                async with Client(settings.endpoints, api_key, secure=settings.tls,
                            ca_file=settings.ca_file) as trial:
                    await Services(trial).journeys()
                    can_change = await Services(trial).may_change_journeys()
            except grpc.aio.AioRpcError as exc:
                refused = is_unauthenticated(exc) or exc.code() == grpc.StatusCode.PERMISSION_DENIED
                error = ("That API key was not accepted." if refused
                         else f"The suite did not answer: {exc.code().name}")
        if error:
            return render(request, "sign_in.html", session, 401 if api_key else 400, error=error)
        # What the header shows: a short random tag of this session, not any part of the key.
        signed = sealer.sign_in(api_key, secrets.token_hex(3), now(), can_change)
        log.info("console sign-in")
        return set_cookie(RedirectResponse("/journeys", status_code=303,
                                           headers=SECURITY_HEADERS), signed)

    async def sign_out(request: Request) -> Response:
        # No server state to end: the cookie is the session, and it is deleted here. A copy
        # taken before stays openable until its idle timeout or expiry (domain/sessions.py).
        session = current(request)
        form = await request.form()
        if session is None or not session.csrf_ok(str(form.get("csrf_token", ""))):
            return PlainTextResponse("CSRF token missing or wrong", status_code=403,
                                     headers=SECURITY_HEADERS)
        log.info("console sign-out")
        return signed_out(RedirectResponse("/sign-in", status_code=303,
                                           headers=SECURITY_HEADERS))

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def home(request: Request) -> Response:
        return RedirectResponse("/journeys", status_code=303, headers=SECURITY_HEADERS)

    # Journeys
    async def journeys(request: Request, session: Session, api: Services) -> Response:
        found = await api.journeys()
        rows = [{"id": j.journey_id, "name": j.display_name or j.journey_id,
                 "state": views.journey_state(j), "version": j.published_version,
                 "nodes": len(j.nodes), "errors": j.error_count,
                 "updated": views.timestamp(j.update_time)} for j in found]
        return render(request, "journeys.html", session, journeys=rows)

    async def journey(request: Request, session: Session, api: Services) -> Response:
        journey_id = request.path_params["journey_id"]
        found = await api.journey(journey_id)
        funnel = await api.funnel(journey_id)
        graph = views.journey_graph(found)
        counts = views.live_counts(found, funnel)
        return render(request, "journey.html", session, journey=found, graph=graph,
                      counts=counts, state=views.journey_state(found),
                      trigger=views.trigger(found),
                      goal=found.goal.event_name)

    async def journey_counts(request: Request, session: Session, api: Services) -> Response:
        # Every open tab polls; the funnel is a scan in analytics. One answer per key and
        # journey is reused for COUNTS_CACHE_SECONDS, however many tabs ask.
        journey_id = request.path_params["journey_id"]
        cache_key = (key_id(session), journey_id)
        counts = counts_cache.get(cache_key, now())
        if counts is None:
            found = await api.journey(journey_id)
            counts = views.live_counts(found, await api.funnel(journey_id))
            counts_cache.put(cache_key, counts, now())
        return JSONResponse(counts, headers=SECURITY_HEADERS)

    async def journey_action(request: Request, session: Session, api: Services) -> Response:
        journey_id, action = request.path_params["journey_id"], request.path_params["action"]
        if action not in JOURNEY_ACTIONS:
            raise NotFound(f"no action {action!r}")
        await api.change_journey(journey_id, action)
        log.info("console journey change", journey_id=journey_id, action=action)
        return RedirectResponse(f"/journeys/{journey_id}", status_code=303,
                                headers=SECURITY_HEADERS)

    # Profiles and messages
    async def profiles(request: Request, session: Session, api: Services) -> Response:
        identifier_type = request.query_params.get("type", "").strip()
        value = request.query_params.get("value", "").strip()
        if value:
            try:
                found = await api.lookup(identifier_type or "user_id", value)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                return render(request, "profiles.html", session, 404, profiles=[],
                              error=f"No profile with {identifier_type} {value!r}.",
                              type=identifier_type, value=value)
            return RedirectResponse(f"/profiles/{found.profile_id}", status_code=303,
                                    headers=SECURITY_HEADERS)
        recent = [views.profile_view(p) for p in await api.profiles()]
        return render(request, "profiles.html", session, profiles=recent, error="",
                      type=identifier_type, value=value)

    async def profile(request: Request, session: Session, api: Services) -> Response:
        found = await api.profile(request.path_params["profile_id"])
        all_journeys = await api.journeys()
        names = {j.journey_id: j.display_name or j.journey_id for j in all_journeys}
        enrollments = await api.enrollments(found.profile_id)
        messages = [views.message_view(m) for m in await api.messages(found.profile_id)]
        return render(request, "profile.html", session, profile=views.profile_view(found),
                      enrollments=[views.enrollment_view(e, names) for e in enrollments],
                      messages=messages)

    async def message(request: Request, session: Session, api: Services) -> Response:
        found = await api.message(request.path_params["message_id"])
        return render(request, "message.html", session, message=views.message_view(found))

    # Reports
    async def experiments(request: Request, session: Session, api: Services) -> Response:
        found = await api.experiments()
        rows = [{"id": e.experiment_id, "journey_id": e.journey_id, "node_id": e.node_id,
                 "content_key": e.content_key, "exposures": e.exposures,
                 "arms": ", ".join(a.arm for a in e.arms)} for e in found]
        return render(request, "experiments.html", session, experiments=rows)

    async def experiment(request: Request, session: Session, api: Services) -> Response:
        results = await api.experiment(request.path_params["experiment_id"])
        return render(request, "experiment.html", session, results=results,
                      chart=views.experiment_chart(results))

    async def decisions(request: Request, session: Session, api: Services) -> Response:
        points = await api.decision_points()
        return render(request, "decisions.html", session, points=points)

    async def decision(request: Request, session: Session, api: Services) -> Response:
        key = request.path_params["key"]
        report = await api.decision_report(key)
        return render(request, "decision.html", session, key=key, report=report,
                      chart=views.decision_chart(report))

    routes = [
        Route("/healthz", healthz),
        Route("/", home),
        Route("/sign-in", sign_in_page, methods=["GET"]),
        Route("/sign-in", sign_in, methods=["POST"]),
        Route("/sign-out", sign_out, methods=["POST"]),
        Route("/journeys", signed_in(journeys)),
        Route("/journeys/{journey_id}", signed_in(journey)),
        Route("/journeys/{journey_id}/counts.json", signed_in(journey_counts)),
        Route("/journeys/{journey_id}/{action}", signed_in(journey_action), methods=["POST"]),
        Route("/profiles", signed_in(profiles)),
        Route("/profiles/{profile_id}", signed_in(profile)),
        Route("/messages/{message_id}", signed_in(message)),
        Route("/experiments", signed_in(experiments)),
        Route("/experiments/{experiment_id}", signed_in(experiment)),
        Route("/decisions", signed_in(decisions)),
        Route("/decisions/{key}", signed_in(decision)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes)
