"""`cnnlab serve`: a class competition's server (cnnlab.serve; docs/competition.md).

    cnnlab serve demo                                      # an MNIST demo competition on http://127.0.0.1:8000
    cnnlab serve tokens competition.yaml --teams alpha,beta    # one token per team, printed once
    cnnlab serve tokens competition.yaml --instructor      # the instructor's token (grading CSV)
    cnnlab serve competition competition.yaml --port 8000  # the server, with its scoring processes
    cnnlab serve worker competition.yaml --workers 4       # more scoring processes (shared database and storage)
    cnnlab serve export-csv competition.yaml --out grades.csv
"""

from __future__ import annotations

import sys

from cnnlab.commands.common import add_json_flag, print_json
from cnnlab.errors import CnnlabError

DEMO_DIR = "competition-demo"


def add_parser(sub):
    p = sub.add_parser("serve", help="run a class competition: leaderboard, submissions, scoring (web server)",
                       description="A self-hosted class competition: teams upload exported ONNX models, scoring "
                                   "processes run them on the hidden test set and cost them, the leaderboard ranks "
                                   "them live. Needs the serve extra: pip install 'cnnlab[serve]'. See "
                                   "docs/competition.md.")
    what = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    comp = what.add_parser("competition", help="serve a competition file")
    comp.add_argument("config", metavar="COMPETITION.yaml")
    _server_options(comp)
    demo = what.add_parser("demo", help="an MNIST demo competition: writes its file, prints tokens, serves it")
    demo.add_argument("--dir", default=DEMO_DIR, help=f"folder of the demo's file and data (default {DEMO_DIR})")
    _server_options(demo)
    tokens = what.add_parser("tokens", help="make teams (or the instructor) and print each new token once")
    tokens.add_argument("config", metavar="COMPETITION.yaml")
    tokens.add_argument("--teams", default="", help="team names, comma-separated: alpha,beta,gamma")
    tokens.add_argument("--instructor", action="store_true", help="the instructor's token (grading CSV, no submissions)")
    tokens.add_argument("--reissue", action="store_true", help="new tokens for existing teams (the old ones stop working)")
    tokens.add_argument("--db", help="database URL (default: the file's, else SQLite in its storage)")
    add_json_flag(tokens)
    csv = what.add_parser("export-csv", help="every submission with its final figures, for grading")
    csv.add_argument("config", metavar="COMPETITION.yaml")
    csv.add_argument("--out", help="CSV file to write (default: standard output)")
    csv.add_argument("--db", help="database URL (default: the file's, else SQLite in its storage)")
    worker = what.add_parser("worker", help="scoring processes only, for a server's shared database and storage")
    worker.add_argument("config", metavar="COMPETITION.yaml")
    worker.add_argument("--db", help="database URL (default: the file's, else SQLite in its storage)")
    worker.add_argument("--workers", type=int, help="scoring processes (default: the file's workers, at least 1)")
    p.set_defaults(func=run)


def _server_options(p):
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--db", help="database URL, e.g. postgresql://user@host/db (default: the file's, else SQLite)")
    p.add_argument("--workers", type=int, help="scoring processes (default: the file's `workers`)")


def run(args) -> int:
    """Every flag is checked before anything is written."""
    if getattr(args, "workers", None) is not None and not 0 <= args.workers <= 64:
        raise CnnlabError(f"--workers must be from 0 to 64, got {args.workers}")
    if getattr(args, "port", None) is not None and not 0 < args.port < 65536:
        raise CnnlabError(f"--port must be from 1 to 65535, got {args.port}")
    if getattr(args, "db", None):
        from cnnlab.database import database_url

        database_url(args.db, "--db")
    _need_extra()
    from cnnlab.serve.config import load_competition

    if args.what == "demo":
        return _demo(args)
    comp = load_competition(args.config)
    if args.what == "competition":
        return _serve(comp, args)
    if args.what == "tokens":
        return _tokens(comp, args)
    if args.what == "export-csv":
        return _export(comp, args)
    return _worker(comp, args)


def _need_extra():
    from importlib.util import find_spec

    missing = [name for name, modules in (("fastapi", ["fastapi"]), ("uvicorn", ["uvicorn"]),
                                          ("sqlalchemy", ["sqlalchemy"]), ("alembic", ["alembic"]),
                                          ("jinja2", ["jinja2"]), ("python-multipart", ["python_multipart", "multipart"]))
               if not any(find_spec(m) for m in modules)]
    if missing:
        raise CnnlabError(f"cnnlab serve needs the serve extra ({', '.join(missing)} missing): "
                          "pip install 'cnnlab[serve]'")


def _serve(comp, args, banner: list[str] = ()) -> int:
    import uvicorn

    from cnnlab.serve.app import create_app

    app = create_app(comp, args.db, args.workers)
    url = f"http://{args.host}:{args.port}"
    print(f"{comp.title or comp.name}: {url}  (database {comp.database_url(args.db).split('@')[-1]}, "
          f"{app.state.dispatcher.processes} scoring process(es); Ctrl-C stops)", flush=True)
    for line in banner:
        print(line, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _tokens(comp, args) -> int:
    from cnnlab.serve.auth import check_team_names, issue_tokens, load_secret
    from cnnlab.serve.db import open_database

    names = check_team_names([n for n in args.teams.split(",") if n.strip()])
    if not names and not args.instructor:
        raise CnnlabError("give --teams NAME,NAME,... or --instructor")
    db = open_database(comp.database_url(args.db))
    secret = load_secret(comp.secret_file)
    tokens = issue_tokens(db, comp, secret, names, "team", args.reissue) if names else {}
    if args.instructor:
        tokens.update(issue_tokens(db, comp, secret, ["instructor"], "instructor", args.reissue))
    db.close()
    if args.json:
        print_json(tokens)
    else:
        print("# each token is shown once; cnnlab keeps only its hash", file=sys.stderr)
        for name, token in tokens.items():
            print(f"{name}\t{token}")
    return 0


def _export(comp, args) -> int:
    from pathlib import Path

    from cnnlab.io import atomic_write_text
    from cnnlab.serve.db import open_database
    from cnnlab.serve.leaderboard import grading_csv

    url = comp.database_url(args.db)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        raise CnnlabError(f"{comp.name} has no database yet ({url[len('sqlite:///'):]}): nothing was submitted; "
                          f"start it with `cnnlab serve competition {comp.path}`")
    db = open_database(url)
    text = grading_csv(db, comp)
    db.close()
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out} ({text.count(chr(10)) - 1} submissions)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _worker(comp, args) -> int:
    import signal
    import threading

    from cnnlab.serve.db import open_database
    from cnnlab.serve.worker import Dispatcher

    db = open_database(comp.database_url(args.db))
    workers = Dispatcher(comp, db, max(1, args.workers if args.workers is not None else comp.workers)).start()
    print(f"{comp.name}: {workers.processes} scoring process(es) on the queue; Ctrl-C stops", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        workers.stop()
        db.close()
    return 0


def _demo(args) -> int:
    import shutil
    from pathlib import Path

    from cnnlab.serve.auth import issue_tokens, load_secret
    from cnnlab.serve.config import load_competition, write_demo
    from cnnlab.serve.db import open_database

    new = not Path(args.dir).exists()
    try:  # a demo that cannot start leaves no folder behind
        comp = load_competition(write_demo(args.dir))
        db = open_database(comp.database_url(args.db))
        secret = load_secret(comp.secret_file)
        tokens = issue_tokens(db, comp, secret, ["demo"], "team", reissue=True)
        tokens.update(issue_tokens(db, comp, secret, ["instructor"], "instructor", reissue=True))
        db.close()
    except BaseException:
        if new:
            shutil.rmtree(args.dir, ignore_errors=True)
        raise
    return _serve(comp, args, [
        f"competition file {Path(comp.path)} (edit it and run `cnnlab serve competition {comp.path}`)",
        f"team 'demo' token:   {tokens['demo']}",
        f"instructor token:    {tokens['instructor']}",
        "submit: train and export a model (`make run`, then `cnnlab export runs/... --format onnx`), open the "
        f"page, log in with the team token and upload model.onnx; or: curl -H 'Authorization: Bearer TOKEN' "
        f"-F model=@model.onnx http://{args.host}:{args.port}/api/submissions",
    ])
