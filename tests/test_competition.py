"""`cnnlab serve`: the competition server through its HTTP API and pages (FastAPI's TestClient, httpx),
with real scoring processes, ONNX Runtime and SQLite. A submission is queued, scored on the hidden
test set, costed and ranked; every bad upload, token, form and limit is one line and a 4xx; teams
never see each other's submissions; tokens are kept only as keyed hashes; a killed scoring process
or server loses nothing; the competition file and the CLI's mistakes are one line."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import pickle
import re
import stat
import time
import warnings

import onnx
import pytest
import torch
from sqlalchemy import select

pytest.importorskip("fastapi", reason="cnnlab serve needs its extra: pip install 'cnnlab[serve]'")

from fastapi.testclient import TestClient  # noqa: E402

from cnnlab.serve.app import create_app  # noqa: E402
from cnnlab.serve.auth import issue_tokens, load_secret  # noqa: E402
from cnnlab.serve.config import load_competition  # noqa: E402
from cnnlab.serve.db import Submission, Team, open_database  # noqa: E402
from cnnlab.serve.leaderboard import leaderboard  # noqa: E402
from cnnlab.serve.submit import model_path  # noqa: E402
from cnnlab.serve.worker import Dispatcher  # noqa: E402
from tests.cli import cli, one_line_error  # noqa: E402
from tests.competition import DATASET, LONG, SLOW, onnx_model, trained_model, wait_done, write_competition  # noqa: E402

TEAMS = ["alpha", "beta", "gamma", "delta", "epsilon"]


class Cup:
    """A running competition: the app, a client, each team's token."""

    def __init__(self, folder, teams=TEAMS, **fields):
        self.path = write_competition(folder, **fields)
        self.comp = load_competition(self.path)
        self.app = create_app(self.comp)
        secret = load_secret(self.comp.secret_file)
        self.tokens = issue_tokens(self.app.state.db, self.comp, secret, teams)
        self.tokens.update(issue_tokens(self.app.state.db, self.comp, secret, ["instructor"], "instructor"))
        self.client = TestClient(self.app)

    def __enter__(self):
        self.client.__enter__()
        return self

    def __exit__(self, *exc):
        self.client.__exit__(*exc)

    def auth(self, team):
        return {"Authorization": f"Bearer {self.tokens[team]}"}

    def submit(self, team, data, name="model.onnx", predictions=None):
        files = {"model": (name, data)}
        if predictions is not None:
            files["predictions"] = ("predictions.csv", predictions)
        return self.client.post("/api/submissions", files=files, headers=self.auth(team))

    def get(self, team, sub_id):
        return self.client.get(f"/api/submissions/{sub_id}", headers=self.auth(team)).json()

    def rows(self):
        with self.app.state.db.session() as s:
            return s.execute(select(Submission).order_by(Submission.id)).scalars().all()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return trained_model(tmp_path_factory)


@pytest.fixture(scope="module")
def cup(tmp_path_factory):
    with Cup(tmp_path_factory.mktemp("cup"), workers=1, daily_limit=3) as c:
        yield c


def one_line(r, status, *needles):
    assert r.status_code == status, (r.status_code, r.text)
    text = r.json()["error"] if r.headers["content-type"].startswith("application/json") else \
        re.search(r'<p class="error" id="error">([^<]*)</p>', r.text).group(1)
    assert "\n" not in text and "Traceback" not in r.text, text
    for n in needles:
        assert n in text, text
    return text


# ---- a submission's life ---------------------------------------------------------------------------

def test_a_submission_is_queued_scored_costed_and_ranked(cup, model, tmp_path):
    r = cup.submit("alpha", model, "lenet5.onnx")
    assert r.status_code == 202, r.text
    sub = r.json()
    assert sub["status"] == "queued" and sub["sha256"] == hashlib.sha256(model).hexdigest()
    done = wait_done(lambda: cup.get("alpha", sub["id"]))
    assert done["status"] == "scored", done
    f = done["figures"]
    # before the deadline a team sees the public 70% of the 1000 test images, never the hidden part
    assert f["images"] == 700 and f["accuracy"] > 0.9 and f["passed"] and f["points"] > 0
    text = json.dumps(done)
    assert done["part"] == "public" and "hidden" not in text and "final" not in text
    # the figures are cnnlab's own: the accuracy of `cnnlab evaluate`, the cost of the PyTorch LeNet-5
    from cnnlab.build import build_for
    from cnnlab.cost import analyze

    rep = analyze(build_for({"model": "lenet5"}, (1, 28, 28), 10), (1, 28, 28))
    assert (f["cycles"], f["peak_activation_bytes"]) == (rep.totals["cycles"], rep.peak_activation)
    assert f["energy_mj"] == pytest.approx(rep.totals["energy_pj"] * 1e-9, rel=1e-12)
    assert f["metric"] == pytest.approx(f["error_percent"] / 12 + f["cycles"] / 300000)
    path = tmp_path / "model.onnx"
    path.write_bytes(model)
    from cnnlab.workflows.measure.evaluate import evaluate_file

    ev = evaluate_file(path, dataset=DATASET, device="cpu")
    row = cup.rows()[-1]
    assert row.result["final"]["correct"] == ev["correct"] and row.result["final"]["images"] == 1000
    assert row.result["public"]["correct"] + row.result["hidden"]["correct"] == ev["correct"]
    # stored by content hash, never by the uploaded name; the leaderboard ranks it
    assert model_path(cup.comp, sub["sha256"]).read_bytes() == model
    assert not list(cup.comp.storage.rglob("lenet5.onnx"))
    board = cup.client.get("/api/leaderboard").json()
    assert board["part"] == "public" and board["rows"][0]["team"] == "alpha" and board["rows"][0]["rank"] == 1
    page = cup.client.get("/").text
    assert 'data-team="alpha"' in page


def test_the_hidden_part_shows_after_the_deadline(cup):
    after = cup.comp.deadline + dt.timedelta(seconds=1)
    before, final = leaderboard(cup.app.state.db, cup.comp), leaderboard(cup.app.state.db, cup.comp, now=after)
    alpha = [r for r in final if r["team"] == "alpha"][0]
    assert [r for r in before if r["team"] == "alpha"][0]["images"] == 700 and alpha["images"] == 1000


def test_views_rank_and_sort(cup, model):
    weak = onnx_model("c4k3-relu-p2-fc10", seed=1)  # untrained: about 90% error, fewer cycles
    sub = cup.submit("beta", weak).json()
    assert wait_done(lambda: cup.get("beta", sub["id"]))["status"] == "scored"
    rows = {r["team"]: r for r in cup.client.get("/api/leaderboard?view=ranking").json()["rows"]}
    assert rows["alpha"]["rank"] == 1 and rows["beta"]["rank"] == 2 and not rows["beta"]["passed"]
    assert rows["beta"]["cycles"] < rows["alpha"]["cycles"]
    err = cup.client.get("/api/leaderboard?view=error").json()["rows"]
    assert [r["team"] for r in err][:2] == ["alpha", "beta"]

    def order(query):
        html = cup.client.get(f"/{query}").text
        return re.findall(r'<tr data-team="([^"]+)"', html), html

    teams, html = order("?view=ranking&sort=cycles&order=asc")
    assert teams.index("beta") < teams.index("alpha")
    assert re.search(r'<th data-key="cycles" aria-sort="ascending">', html)
    assert 'href="/?view=ranking&amp;sort=cycles&amp;order=desc"' in html  # a click reverses it
    teams, html = order("?view=ranking&sort=cycles&order=desc")
    assert teams.index("alpha") < teams.index("beta")
    assert order("?view=error&sort=team")[0] == sorted(order("?view=error&sort=team")[0])
    assert order("?sort=nonsense")[0][:2] == ["alpha", "beta"]  # an unknown column: the ranking


def test_teams_see_only_their_own_submissions(cup, model):
    alpha = cup.client.get("/api/submissions", headers=cup.auth("alpha")).json()["submissions"]
    beta = cup.client.get("/api/submissions", headers=cup.auth("beta")).json()["submissions"]
    assert alpha and beta and not {s["id"] for s in alpha} & {s["id"] for s in beta}
    one_line(cup.client.get(f"/api/submissions/{alpha[0]['id']}", headers=cup.auth("beta")), 404, "no submission")
    one_line(cup.client.get("/api/submissions/999999", headers=cup.auth("beta")), 404)
    # the team page, logged in through the form, lists the team's own files only
    page = login(cup, "beta")
    assert beta[0]["sha256"][:12] in page.text and alpha[0]["sha256"][:12] not in page.text
    # no URL serves a stored file, the database or the secret
    for url in ("/static/../data/secret", "/static/%2e%2e/%2e%2e/competition.yaml", f"/submissions/{alpha[0]['sha256']}",
                "/data/competition.db"):
        assert cup.client.get(url).status_code == 404, url


def login(cup, team):
    cup.client.cookies.clear()
    form = cup.client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    r = cup.client.post("/login", data={"token": cup.tokens[team], "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/team"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    page = cup.client.get("/team")
    assert page.status_code == 200 and f"<h1>{team}</h1>" in page.text
    return page


# ---- what is refused ---------------------------------------------------------------------------------

def _torchscript() -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.x: people still send its files
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)), buf)
    return buf.getvalue()


def _torch_save() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    return buf.getvalue()


def _without_metadata(data: bytes) -> bytes:
    proto = onnx.load_from_string(data)
    del proto.metadata_props[:]
    return proto.SerializeToString()


def test_every_bad_upload_is_one_line_and_queues_nothing(cup, model):
    before = len(cup.rows())
    files = sorted(p.name for p in cup.comp.submissions_dir.rglob("*") if p.is_file())
    cases = [
        (onnx_model("lenet5", (3, 32, 32)), 400, "takes 3x32x32 images, but this competition's"),
        (onnx_model(classes=[f"digit{i}" for i in range(10)]), 400, "digit0"),
        (onnx_model(classes=[f"class{i}" for i in range(11)]), 400, "scores 11 classes"),
        (pickle.dumps({"weights": [1, 2, 3]}), 415, "a Python pickle"),
        (_torch_save(), 415, "a PyTorch file"),
        (_torchscript(), 415, "a PyTorch file"),
        (b"\x00garbage" * 100, 415, "not an ONNX model"),
        (_without_metadata(model), 400, "no cnnlab metadata"),
        (b"", 400, "is empty"),
    ]
    for data, status, needle in cases:
        one_line(cup.submit("gamma", data, "model.onnx"), status, needle)  # named .onnx: refused by content
    one_line(cup.client.post("/api/submissions", files={"model": ("m.onnx", model)}), 401, "Authorization: Bearer")
    one_line(cup.client.post("/api/submissions", files={"model": ("m.onnx", model)},
                             headers={"Authorization": "Bearer cnl_not-a-token"}), 401, "unknown token")
    one_line(cup.client.post("/api/submissions", headers=cup.auth("gamma")), 400, "choose a model file")
    one_line(cup.submit("instructor", model), 403, "instructor")
    assert len(cup.rows()) == before
    assert sorted(p.name for p in cup.comp.submissions_dir.rglob("*") if p.is_file()) == files


def test_a_file_name_cannot_reach_outside_the_storage(cup, tmp_path):
    data = onnx_model("lenet5", seed=7)
    target = tmp_path / "escaped.onnx"
    name = "../" * 12 + str(target).lstrip("/")
    r = cup.submit("gamma", data, name)
    assert r.status_code == 202, r.text
    assert not target.exists()
    assert cup.rows()[-1].file_name == "escaped.onnx"
    stored = [p for p in cup.comp.storage.rglob("*") if p.is_file() and "escaped" in p.name]
    assert stored == []  # stored as <sha256>.onnx only


def test_forms_need_their_csrf_token(cup):
    cup.client.cookies.clear()
    one_line(cup.client.post("/login", data={"token": cup.tokens["delta"]}), 403, "security token")
    cup.client.get("/login")
    one_line(cup.client.post("/login", data={"token": cup.tokens["delta"], "csrf": "forged"}), 403, "security token")
    login(cup, "delta")
    before = len(cup.rows())
    r = cup.client.post("/team/submit", files={"model": ("m.onnx", onnx_model(seed=3))})
    one_line(r, 403, "security token")
    assert len(cup.rows()) == before
    one_line(cup.client.post("/logout"), 403)


def test_tokens_are_kept_only_as_keyed_hashes(cup):
    secret_file = cup.comp.secret_file
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    with cup.app.state.db.session() as s:
        teams = s.execute(select(Team)).scalars().all()
    assert {t.name for t in teams} == set(cup.tokens)
    assert all(re.fullmatch(r"[0-9a-f]{64}", t.token_hash) for t in teams)
    db_bytes = b"".join(p.read_bytes() for p in cup.comp.storage.glob("competition.db*"))
    assert not any(tok.encode() in db_bytes for tok in cup.tokens.values())
    assert not any(hashlib.sha256(tok.encode()).hexdigest() == t.token_hash for tok in cup.tokens.values() for t in teams)
    # a new token ends the old one and the sessions it opened
    login(cup, "epsilon")
    old = cup.tokens["epsilon"]
    cup.tokens.update(issue_tokens(cup.app.state.db, cup.comp, load_secret(secret_file), ["epsilon"], reissue=True))
    assert cup.client.get("/team", follow_redirects=False).headers["location"] == "/login"
    one_line(cup.client.get("/api/submissions", headers={"Authorization": f"Bearer {old}"}), 401)
    assert cup.client.get("/api/submissions", headers=cup.auth("epsilon")).status_code == 200


def test_daily_limit_and_the_same_file_twice(cup):
    first = onnx_model(seed=11)
    assert cup.submit("delta", first).status_code == 202
    one_line(cup.submit("delta", first), 409, "already", "submission")
    assert cup.submit("delta", onnx_model(seed=12)).status_code == 202
    assert cup.submit("delta", onnx_model(seed=13)).status_code == 202
    one_line(cup.submit("delta", onnx_model(seed=14)), 429, "3 submissions for today", "00:00 UTC")
    assert cup.submit("epsilon", first).status_code == 202  # another team may send the same file (the CSV says so)


def test_pages_load_nothing_from_elsewhere_and_send_security_headers(cup):
    for url in ("/", "/?view=error", "/login"):
        r = cup.client.get(url)
        assert r.status_code == 200
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
        refs = re.findall(r'(?:src|href|action)="([^"]*)"', r.text)
        assert refs and all(u.startswith("/") and not u.startswith("//") for u in refs), refs
        assert "<script" not in r.text
    assert cup.client.get("/static/style.css").headers["content-type"].startswith("text/css")


def test_the_grading_csv_is_the_instructors(cup):
    one_line(cup.client.get("/admin/export.csv", headers=cup.auth("alpha")), 403, "instructor")
    one_line(cup.client.get("/admin/export.csv"), 403)
    r = cup.client.get("/admin/export.csv", headers=cup.auth("instructor"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    import csv

    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == len(cup.rows())
    best = [row for row in rows if row["best"] == "1"]
    assert {row["team"] for row in best} >= {"alpha", "beta"}
    alpha = [row for row in best if row["team"] == "alpha"][0]
    assert alpha["rank"] == "1" and float(alpha["error_percent"]) < 10 and alpha["hidden_error_percent"] != ""
    same = [row for row in rows if row["team"] == "epsilon" and row["same_file_as"]]
    assert same and same[0]["same_file_as"] == "delta"


def test_predictions_csv_is_checked_against_the_model(cup, tmp_path, capsys):
    data = onnx_model(seed=21)
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    code, _, err = cli(capsys, "predict", path, "--dataset", DATASET, "--out", tmp_path / "p.csv")
    assert code == 0, err
    csv_bytes = (tmp_path / "p.csv").read_bytes()
    one_line(cup.submit("epsilon", data, predictions=b"image,label\n0,1\n"), 400, "header id,label")
    one_line(cup.submit("epsilon", data, predictions=csv_bytes.rsplit(b"\n", 2)[0] + b"\n"), 400, "999 rows")
    sub = cup.submit("epsilon", data, predictions=csv_bytes).json()
    done = wait_done(lambda: cup.get("epsilon", sub["id"]))
    assert done["csv"]["agreement"] == 1.0 and done["csv"]["rows"] == 1000


# ---- limits of the scoring processes -----------------------------------------------------------------

def test_scoring_runs_under_memory_and_time_limits_and_a_killed_process_loses_nothing(tmp_path):
    """A model that needs more memory than the limit fails with the reason; a scoring process killed
    mid-job puts its submission back in the queue (a new process runs it again); one that runs past
    the time limit is killed and the submission fails with the reason."""
    import os
    import signal

    with Cup(tmp_path, workers=1, time_limit=5, memory_limit="2GB") as c:
        big = c.submit("alpha", onnx_model(SLOW)).json()  # 1000 x 192 x 28 x 28 floats a layer: 600 MB each
        done = wait_done(lambda: c.get("alpha", big["id"]), timeout=60)
        assert done["status"] == "failed" and "ran out of memory" in done["error"], done
        sub = c.submit("alpha", onnx_model(LONG)).json()  # small activations, many seconds of work
        wait_done(lambda: c.get("alpha", sub["id"]), statuses=("running",))
        pid = c.app.state.dispatcher.pids()[0]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not (c.rows()[-1].attempts == 2 and c.rows()[-1].status == "running" and c.app.state.dispatcher.pids()):
            assert time.monotonic() < deadline, (c.rows()[-1].status, c.rows()[-1].attempts)
            time.sleep(0.1)
        assert c.app.state.dispatcher.pids()[0] != pid  # a new scoring process runs it again
        done = wait_done(lambda: c.get("alpha", sub["id"]), timeout=30)
        assert done["status"] == "failed" and "time limit of 5 s" in done["error"], done


def test_stale_running_submissions_go_back_to_the_queue_then_fail(tmp_path):
    """A server killed mid-job leaves rows running; once their lease has run out any worker requeues
    them, and after MAX_ATTEMPTS tries they fail with the reason: never lost, never stuck."""
    comp = load_competition(write_competition(tmp_path))
    db = open_database(comp.database_url())
    issue_tokens(db, comp, load_secret(comp.secret_file), ["alpha"])
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    with db.session() as s, s.begin():
        team = s.execute(select(Team)).scalar_one()
        for attempts in (1, 3):
            s.add(Submission(competition=comp.name, team_id=team.id, file_name="m.onnx", sha256=f"{attempts:064d}",
                             size=1, status="running", attempts=attempts, claimed_by="gone:1", lease_until=past))
    Dispatcher(comp, db, 0, log=lambda line: None).requeue_stale()
    with db.session() as s:
        rows = s.execute(select(Submission).order_by(Submission.attempts)).scalars().all()
    assert [r.status for r in rows] == ["queued", "failed"]
    assert rows[0].claimed_by is None and "interrupted" in rows[1].error and "3 times" in rows[1].error


# ---- limits of the web side ----------------------------------------------------------------------------

def test_size_rate_and_deadline_limits(tmp_path, model):
    with Cup(tmp_path / "a", max_upload="64KiB", rate_limit=4) as c:
        one_line(c.submit("alpha", model), 413, "limit of")  # 250 KB: cut while the body is read
        for _ in range(3):
            one_line(c.client.post("/api/submissions", headers={"Authorization": "Bearer cnl_guess"}), 401)
        r = c.client.post("/api/submissions", headers={"Authorization": "Bearer cnl_guess"})
        one_line(r, 429, "too many requests")
        assert int(r.headers["retry-after"]) >= 1
        assert c.rows() == []
    with Cup(tmp_path / "b", deadline="2000-01-01T00:00:00Z") as c:
        one_line(c.submit("alpha", model), 403, "closed")
        assert c.client.get("/api/leaderboard").json()["part"] == "final"


def test_the_schema_is_the_migrations(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from cnnlab.serve.db import VERSION_TABLE, Base

    db = open_database(f"sqlite:///{tmp_path / 'x.db'}")
    with db.engine.connect() as conn:
        ours = {"include_name": lambda name, kind, parent: name != VERSION_TABLE}
        assert compare_metadata(MigrationContext.configure(conn, opts=ours), Base.metadata) == []
    assert open_database(f"sqlite:///{tmp_path / 'x.db'}")  # a second start migrates nothing


# ---- the competition file and the CLI -------------------------------------------------------------------

@pytest.mark.parametrize("fields, needle", [
    ({"colour": "red"}, "colour: unknown key"),
    ({"deadline": None}, "deadline: missing"),
    ({"deadline": "2030-01-01T00:00:00"}, "has no time zone"),
    ({"deadline": "soon"}, "with its time zone"),
    ({"name": "My Cup"}, "not a competition name"),
    ({"dataset": "mnsit"}, "did you mean 'mnist'"),
    ({"metric": "accuracy"}, "is not ranking or error"),
    ({"hidden_fraction": 1}, "hidden_fraction"),
    ({"max_upload": "lots"}, "max_upload"),
    ({"database": "nonsense"}, "is not a database URL"),
    ({"workers": -1}, "workers"),
])
def test_a_bad_competition_file_is_one_line(tmp_path, capsys, fields, needle):
    path = write_competition(tmp_path, **fields)
    code, _, err = cli(capsys, "serve", "tokens", path, "--teams", "a")
    line = one_line_error(code, err, needle)
    assert str(path) in line
    assert not (tmp_path / "data").exists()


def test_tokens_and_grades_from_the_cli(tmp_path, capsys):
    path = write_competition(tmp_path)
    code, out, err = cli(capsys, "serve", "tokens", path, "--teams", "red,blue", "--instructor", "--json")
    assert code == 0, err
    tokens = json.loads(out)
    assert set(tokens) == {"red", "blue", "instructor"} and len(set(tokens.values())) == 3
    one_line_error(*cli(capsys, "serve", "tokens", path, "--teams", "red")[::2], "exists already", "--reissue")
    code, out, _ = cli(capsys, "serve", "tokens", path, "--teams", "red", "--reissue")
    assert code == 0 and out.startswith("red\tcnl_") and tokens["red"] not in out
    one_line_error(*cli(capsys, "serve", "tokens", path, "--teams", "../etc")[::2], "bad team name")
    one_line_error(*cli(capsys, "serve", "tokens", path)[::2], "--teams")
    code, _, err = cli(capsys, "serve", "export-csv", path, "--out", tmp_path / "grades.csv")
    assert code == 0, err
    assert (tmp_path / "grades.csv").read_text().startswith("team,submission,submitted_at,status,best,rank")
    one_line_error(*cli(capsys, "serve", "competition", tmp_path / "none.yaml")[::2], "not found")
    one_line_error(*cli(capsys, "serve", "competition", path, "--db", "postgresql://nobody@127.0.0.1:1/none")[::2],
                   "cannot open the competition database 127.0.0.1:1/none")
