"""The competition's web app (FastAPI): pages for people, a JSON API for scripts.

    app = create_app(load_competition("competition.yaml"))    # database migrated, dataset checked
    uvicorn.run(app, host="127.0.0.1", port=8000)             # `cnnlab serve competition` does this

Pages (server-rendered with Jinja2; one stylesheet from /static, no script, nothing from another
site): `/` the leaderboard (`?view=ranking|error`, `&sort=COLUMN&order=asc|desc`), `/login`, `/team`
(a team's submissions and the upload form), `/logout`. API (`Authorization: Bearer TOKEN`):
`POST /api/submissions` (multipart: `model`, optional `predictions`) -> 202 and the queued
submission; `GET /api/submissions[/ID]` (a team's own only: another team's is 404);
`GET /api/leaderboard`; `GET /admin/export.csv` (the instructor's token or session); `/healthz`.

Every refusal is one line: an HTML page with it, or `{"error": "..."}` under /api and /admin,
with a 4xx status (cnnlab.serve.submit lists the submission checks). The request body is cut at
the upload limit (413) before it is read whole; login and uploads are rate-limited per client
(429, with Retry-After), failed tokens included; forms need the CSRF token of their page.
"""

from __future__ import annotations

import datetime as dt
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from cnnlab import __version__
from cnnlab.serve.auth import (CSRF_COOKIE, SESSION_COOKIE, SESSION_SECONDS, RateLimiter, bearer, csrf_ok,
                               load_secret, new_csrf, session_team, session_value, token_hash)
from cnnlab.serve.db import Submission, Team, open_database
from cnnlab.serve.leaderboard import COLUMNS, VIEWS, grading_csv, history, leaderboard, phase
from cnnlab.serve.submit import MAX_CSV, DatasetFacts, Refused, enqueue
from cnnlab.serve.worker import Dispatcher

HERE = Path(__file__).parent
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                                 b"frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
]


class Problem(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _api(request: Request) -> bool:
    return request.url.path.startswith(("/api/", "/admin/"))


class Limits:
    """ASGI middleware: the security headers on every response, and request bodies cut at `limit` bytes."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": list(message.get("headers", [])) + SECURITY_HEADERS}
            await send(message)

        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._too_large(scope, send_with_headers)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return message

        try:
            await self.app(scope, limited, send_with_headers)
        except _TooLarge:
            if not started:
                await self._too_large(scope, send_with_headers)

    async def _too_large(self, scope, send):
        text = _TooLarge(self.limit).detail
        api = scope["path"].startswith(("/api/", "/admin/"))
        response = JSONResponse({"error": text}, 413) if api else HTMLResponse(f"<p>{text}</p>", 413)
        response.headers["connection"] = "close"
        await response({"type": "http"}, None, send)


class _TooLarge(HTTPException):
    """Raised while the body is read: FastAPI passes an HTTPException from its form parsing on as it is."""

    def __init__(self, limit: int):
        super().__init__(413, f"the upload is over the competition's limit of {limit:,} bytes: make the model smaller")


def create_app(comp, database: str | None = None, workers: int | None = None) -> FastAPI:
    """The app for one competition; its database is opened and migrated and its dataset loaded now,
    so a problem with either is one CnnlabError line before anything is served. `workers` scoring
    processes (default: the file's) start with the app."""
    facts = DatasetFacts.load(comp)  # first: a missing dataset writes nothing
    db = open_database(comp.database_url(database))
    secret = load_secret(comp.secret_file)
    dispatcher = Dispatcher(comp, db, comp.workers if workers is None else workers)
    limiter = RateLimiter(comp.rate_limit)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["num"] = lambda v, fmt=",": "" if v is None else format(v, fmt)

    @asynccontextmanager
    async def lifespan(app):
        await run_in_threadpool(dispatcher.start)
        try:
            yield
        finally:
            await run_in_threadpool(dispatcher.stop)
            db.close()

    app = FastAPI(title=comp.title or comp.name, version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.comp, app.state.db, app.state.dispatcher, app.state.facts = comp, db, dispatcher, facts
    app.add_middleware(Limits, limit=comp.max_upload + MAX_CSV + 64 * 1024)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    # ---- who is asking -----------------------------------------------------------------------------

    def client(request: Request) -> str:
        return request.client.host if request.client else "?"

    def limit(request: Request):
        wait = limiter.hit(client(request))
        if wait:
            raise Problem(429, f"too many requests: wait {wait:.0f} s and try again", {"Retry-After": str(int(wait) + 1)})

    def team_by_token(token: str | None) -> Team | None:
        if not token:
            return None
        with db.session() as s:
            return s.execute(select(Team).where(Team.token_hash == token_hash(secret, token),
                                                Team.competition == comp.name)).scalar_one_or_none()

    def team_by_session(request: Request) -> Team | None:
        with db.session() as s:
            def hash_of(team_id):
                t = s.get(Team, team_id)
                return t.token_hash if t is not None and t.competition == comp.name else None
            team_id = session_team(secret, request.cookies.get(SESSION_COOKIE), hash_of)
            return s.get(Team, team_id) if team_id is not None else None

    def api_team(request: Request) -> Team:
        team = team_by_token(bearer(request.headers.get("authorization")))
        if team is None:
            limit(request)  # wrong tokens count against the client's rate
            raise Problem(401, "missing or unknown token: send the header Authorization: Bearer YOUR_TOKEN",
                          {"WWW-Authenticate": "Bearer"})
        return team

    def check_csrf(request: Request, value: str | None):
        if not csrf_ok(request.cookies.get(CSRF_COOKIE), value):
            raise Problem(403, "the form's security token is missing or out of date: reload the page and try again")

    # ---- rendering ------------------------------------------------------------------------------------

    def page(request: Request, template: str, status: int = 200, **context):
        csrf = request.cookies.get(CSRF_COOKIE) or new_csrf()
        now = dt.datetime.now(dt.timezone.utc)
        response = templates.TemplateResponse(request, template, {
            "comp": comp, "facts": facts, "csrf": csrf, "phase": phase(comp, now), "now": now,
            "user": context.pop("user", None) or team_by_session(request), **context}, status_code=status)
        if request.cookies.get(CSRF_COOKIE) != csrf:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return response

    @app.exception_handler(Problem)
    async def problem(request: Request, e: Problem):
        if _api(request):
            return JSONResponse({"error": e.message}, e.status, headers=e.headers)
        return await run_in_threadpool(lambda: _error_page(request, e))

    def _error_page(request, e):
        response = page(request, "error.html", e.status, message=e.message)
        response.headers.update(e.headers)
        return response

    @app.exception_handler(HTTPException)
    async def http_problem(request: Request, e: HTTPException):
        text = {404: "no such page", 405: "that method is not allowed here"}.get(e.status_code, str(e.detail))
        return await problem(request, Problem(e.status_code, text))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or "the request"
        return await problem(request, Problem(400, f"{field}: {first.get('msg', 'is not valid').lower()}"))

    # ---- pages -------------------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def board_page(request: Request, view: str = "", sort: str = "rank", order: str = "asc"):
        view = view if view in VIEWS else comp.metric
        sort = sort if sort in COLUMNS else "rank"
        order = "desc" if order == "desc" else "asc"
        rows = leaderboard(db, comp, view, sort, order)
        return page(request, "leaderboard.html", view=view, sort=sort, order=order, rows=rows, columns=COLUMNS)

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request):
        return page(request, "login.html")

    @app.post("/login")
    def login(request: Request, token: str = Form(""), csrf: str = Form("")):
        limit(request)
        check_csrf(request, csrf)
        team = team_by_token(token)
        if team is None:
            return page(request, "login.html", 401, error="that token is not one of this competition's: check it, "
                                                          "or ask the instructor for a new one")
        response = RedirectResponse("/team", 303)
        response.set_cookie(SESSION_COOKIE, session_value(secret, team.id, team.token_hash), max_age=SESSION_SECONDS,
                            httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return response

    @app.post("/logout")
    def logout(request: Request, csrf: str = Form("")):
        check_csrf(request, csrf)
        response = RedirectResponse("/", 303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    def team_page(request: Request, team: Team, status: int = 200, message: str | None = None,
                  error: str | None = None):
        rows = history(db, comp, team.id)
        waiting = any(r["status"] in ("queued", "running") for r in rows)
        return page(request, "team.html", status, user=team, rows=rows, message=message, error=error,
                    refresh=waiting)

    @app.get("/team", response_class=HTMLResponse)
    def team_view(request: Request, submitted: int | None = None):
        team = team_by_session(request)
        if team is None:
            return RedirectResponse("/login", 303)
        message = f"Submission {submitted} is queued: this page shows its figures when it is scored." \
            if submitted else None
        return team_page(request, team, message=message)

    @app.post("/team/submit")
    def submit_form(request: Request, model: UploadFile | None = File(None), predictions: UploadFile | None = File(None),
                    csrf: str = Form("")):
        team = team_by_session(request)
        if team is None:
            raise Problem(401, "log in with your team's token before submitting")
        limit(request)
        check_csrf(request, csrf)
        try:
            sub = _submit(team, model, predictions)
        except Refused as e:
            return team_page(request, team, e.status, error=str(e))
        return RedirectResponse(f"/team?submitted={sub.id}", 303)

    def _submit(team: Team, model: UploadFile | None, predictions: UploadFile | None) -> Submission:
        if team.role != "team":
            raise Refused("the instructor's token cannot submit: log in with a team's token", 403)
        if model is None or not model.filename:
            raise Refused("choose a model file (model.onnx, written by `cnnlab export RUN_DIR --format onnx`)")
        data = model.file.read(comp.max_upload + 1)
        csv_data = predictions.file.read(MAX_CSV + 1) if predictions is not None and predictions.filename else None
        sub = enqueue(db, comp, facts, team.id, data, model.filename, csv_data)
        dispatcher.wake()
        return sub

    # ---- API ------------------------------------------------------------------------------------------------

    @app.post("/api/submissions", status_code=202)
    def api_submit(request: Request, model: UploadFile | None = File(None), predictions: UploadFile | None = File(None)):
        team = api_team(request)  # a wrong token counts against the rate there
        limit(request)
        try:
            sub = _submit(team, model, predictions)
        except Refused as e:
            raise Problem(e.status, str(e)) from None
        return _json(sub, team)

    @app.get("/api/submissions")
    def api_list(request: Request):
        team = api_team(request)
        return {"team": team.name, "submissions": [_public(r) for r in history(db, comp, team.id)]}

    @app.get("/api/submissions/{sub_id}")
    def api_get(request: Request, sub_id: int):
        team = api_team(request)
        with db.session() as s:
            sub = s.get(Submission, sub_id)
        if sub is None or sub.team_id != team.id:
            raise Problem(404, f"your team has no submission {sub_id}")
        return _public(next(r for r in history(db, comp, team.id) if r["id"] == sub_id))

    @app.get("/api/leaderboard")
    def api_board(view: str = ""):
        view = view if view in VIEWS else comp.metric
        return {"competition": comp.name, "view": view, "part": phase(comp),
                "rows": [{k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in r.items() if k != "id"}
                         for r in leaderboard(db, comp, view)]}

    @app.get("/admin/export.csv")
    def export_csv(request: Request):
        team = team_by_token(bearer(request.headers.get("authorization"))) or team_by_session(request)
        if team is None or team.role != "instructor":
            if team is None:
                limit(request)
            raise Problem(403, "the grading CSV is the instructor's: send the instructor token "
                               "(Authorization: Bearer TOKEN), or log in with it")
        return Response(grading_csv(db, comp), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{comp.name}-grades.csv"'})

    @app.get("/healthz")
    def healthz():
        with db.session() as s:
            queued = s.execute(select(func.count()).select_from(Submission).where(
                Submission.competition == comp.name, Submission.status == "queued")).scalar_one()
        return {"ok": True, "competition": comp.name, "queued": queued, "workers": len(dispatcher.pids())}

    return app


def _json(sub: Submission, team: Team) -> dict:
    return {"id": sub.id, "team": team.name, "status": sub.status, "sha256": sub.sha256,
            "submitted_at": sub.created_at.isoformat()}


def _public(row: dict) -> dict:
    out = {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row.items() if k != "figures"}
    f = row["figures"]
    out["figures"] = None if f is None else {k: (v.isoformat() if isinstance(v, dt.datetime) else v)
                                             for k, v in f.items() if k != "id"}
    return out
