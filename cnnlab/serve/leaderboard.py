"""The leaderboard, a team's history and the grading CSV, from the submissions table.

    board = leaderboard(db, comp, view="ranking", sort="metric", order="asc")   # one row per team
    rows = history(db, comp, team_id)                   # a team's submissions, newest first
    text = grading_csv(db, comp)                        # every submission, for the instructor

Before the deadline every figure is the public part's (the hidden images' stay in the database);
from the deadline on, the final figures over the whole test set. A team's row is its best scored
submission for the view: `ranking` (the course's metric, error%/12 + cycles/300000, lower is
better; submissions that break a hard constraint rank after every one that does not), or `error`
(test error alone). Ranks follow the view; `sort` only reorders the table.
"""

from __future__ import annotations

import csv
import io

from sqlalchemy import select

from cnnlab.serve.db import Submission, Team

VIEWS = ("ranking", "error")
# column key -> (title, value of a board row) for sorting; each sorts ascending by default except points
COLUMNS = {
    "rank": ("Rank", lambda r: r["rank"]),
    "team": ("Team", lambda r: r["team"].lower()),
    "error": ("Error %", lambda r: r["error_percent"]),
    "cycles": ("Cycles", lambda r: r["cycles"]),
    "energy": ("Energy mJ", lambda r: r["energy_mj"]),
    "peak": ("Peak activation B", lambda r: r["peak_activation_bytes"]),
    "points": ("Points", lambda r: r["points"]),
    "metric": ("Metric", lambda r: r["metric"]),
    "submissions": ("Entries", lambda r: r["submissions"]),
    "submitted": ("Submitted", lambda r: r["submitted_at"]),
}


def phase(comp, now=None) -> str:
    """'final' from the deadline on (or when nothing is hidden), else 'public'."""
    return "final" if comp.after_deadline(now) or comp.hidden_fraction == 0 else "public"


def figures(sub: Submission, part: str) -> dict | None:
    """The figures of a scored submission as a board shows them, for `part` (public or final)."""
    r = sub.result or {}
    p = r.get(part)
    if sub.status != "scored" or not p:
        return None
    return {"id": sub.id, "error_percent": p["error_percent"], "accuracy": p["accuracy"], "images": p["images"],
            "cycles": r["cycles"], "energy_mj": r["energy_mj"], "peak_activation_bytes": r["peak_activation_bytes"],
            "points": p["points"], "points_by_part": p["points_by_part"], "metric": p["metric"],
            "passed": not p["hard_constraints_failed"], "failed": p["hard_constraints_failed"],
            "submitted_at": sub.created_at}


def _key(view: str):
    if view == "error":
        return lambda f: (f["error_percent"], f["metric"], f["id"])
    return lambda f: (not f["passed"], f["metric"], f["id"])


def leaderboard(db, comp, view: str = "ranking", sort: str = "rank", order: str = "asc", now=None) -> list[dict]:
    part = phase(comp, now)
    with db.session() as s:
        teams = {t.id: t.name for t in s.execute(select(Team).where(Team.competition == comp.name,
                                                                    Team.role == "team")).scalars()}
        subs = s.execute(select(Submission).where(Submission.competition == comp.name)).scalars().all()
    by_team: dict[int, list] = {}
    counts: dict[int, int] = {}
    for sub in subs:
        counts[sub.team_id] = counts.get(sub.team_id, 0) + 1
        f = figures(sub, part)
        if f is not None and sub.team_id in teams:
            by_team.setdefault(sub.team_id, []).append(f)
    key = _key(view)
    rows = []
    for team_id, fs in by_team.items():
        best = min(fs, key=key)
        rows.append({"team": teams[team_id], "submissions": counts[team_id], **best})
    rows.sort(key=lambda r: key(r))
    for i, r in enumerate(rows, start=1):
        r["rank"] = i
    if sort in COLUMNS:
        rows.sort(key=COLUMNS[sort][1], reverse=order == "desc")
    return rows


def history(db, comp, team_id: int, now=None) -> list[dict]:
    """A team's submissions, newest first, with the figures it may see now."""
    part = phase(comp, now)
    with db.session() as s:
        subs = s.execute(select(Submission).where(Submission.team_id == team_id)
                         .order_by(Submission.id.desc())).scalars().all()
    out = []
    for sub in subs:
        csv_check = (sub.result or {}).get("predictions_csv")
        out.append({"id": sub.id, "submitted_at": sub.created_at, "file_name": sub.file_name,
                    "sha256": sub.sha256, "status": sub.status, "error": sub.error,
                    "figures": figures(sub, part), "csv": csv_check, "part": part,
                    "params": (sub.result or {}).get("params"), "macs": (sub.result or {}).get("macs")})
    return out


CSV_COLUMNS = ("team", "submission", "submitted_at", "status", "best", "rank", "sha256", "same_file_as",
               "error_percent", "public_error_percent", "hidden_error_percent", "accuracy", "cycles", "energy_mj",
               "peak_activation_bytes", "params", "macs", "metric", "points", "error_points", "energy_points",
               "latency_points", "hard_constraints_failed", "predictions_csv_agreement", "reason")


def grading_csv(db, comp) -> str:
    """Every submission with its final figures (the whole test set), the team's best marked and ranked
    by the competition's metric; `same_file_as` names other teams that sent the same file."""
    with db.session() as s:
        teams = {t.id: t.name for t in s.execute(select(Team).where(Team.competition == comp.name)).scalars()}
        subs = s.execute(select(Submission).where(Submission.competition == comp.name)
                         .order_by(Submission.id)).scalars().all()
    best = {}
    key = _key(comp.metric)
    for sub in subs:
        f = figures(sub, "final")
        if f is not None and (sub.team_id not in best or key(f) < key(best[sub.team_id])):
            best[sub.team_id] = f
    ranks = {f["id"]: i for i, f in enumerate(sorted(best.values(), key=key), start=1)}
    senders: dict[str, set] = {}
    for sub in subs:
        senders.setdefault(sub.sha256, set()).add(teams.get(sub.team_id, "?"))
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for sub in subs:
        r = sub.result or {}
        f, pub, hid = r.get("final") or {}, r.get("public") or {}, r.get("hidden") or {}
        team = teams.get(sub.team_id, "?")
        pts = f.get("points_by_part") or {}
        w.writerow([team, sub.id, sub.created_at.isoformat(timespec="seconds"), sub.status,
                    int(sub.id in ranks), ranks.get(sub.id, ""), sub.sha256,
                    " ".join(sorted(senders[sub.sha256] - {team})),
                    _num(f.get("error_percent")), _num(pub.get("error_percent")), _num(hid.get("error_percent")),
                    _num(f.get("accuracy")), r.get("cycles", ""), _num(r.get("energy_mj")),
                    r.get("peak_activation_bytes", ""), r.get("params", ""), r.get("macs", ""),
                    _num(f.get("metric")), f.get("points", ""), pts.get("error", ""), pts.get("energy", ""),
                    pts.get("latency", ""), "; ".join(f.get("hard_constraints_failed") or []),
                    _num((r.get("predictions_csv") or {}).get("agreement")), sub.error or ""])
    return out.getvalue()


def _num(v):
    return "" if v is None else f"{v:.6g}"
