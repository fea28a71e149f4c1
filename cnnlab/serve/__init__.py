"""A class competition's server: `cnnlab serve` (docs/competition.md).

    comp = load_competition("competition.yaml")     # the competition file, checked whole
    app = create_app(comp)                           # FastAPI; `cnnlab serve competition` runs it on uvicorn

Teams upload exported ONNX models; scoring processes run them on the hidden test set with ONNX
Runtime, cost them with the cost model and give them the course's points; the leaderboard ranks
them live. Inside (each module imports only those above it in this list):

    config.py       Competition, load_competition, write_demo   the competition file
    db.py           Team, Submission, open_database             the tables (SQLAlchemy, Alembic migrations/)
    auth.py         tokens, sessions, CSRF, RateLimiter         who may do what
    submit.py       check_model, enqueue, Refused               an upload checked, stored by hash, queued
    scoring.py      Scorer, hidden_mask                         one file scored (in a scoring process)
    worker.py       Dispatcher, ScoringProcess                  the queue, processes with time and memory limits
    leaderboard.py  leaderboard, history, grading_csv           what the pages and the CSV show
    app.py          create_app                                  the pages and the JSON API
    templates/, static/                                         Jinja2 pages, one stylesheet

Importing this package imports none of FastAPI, SQLAlchemy or torch; the modules do.
"""


def load_competition(path):
    from cnnlab.serve.config import load_competition as load

    return load(path)


def create_app(comp, database=None, workers=None):
    from cnnlab.serve.app import create_app as create

    return create(comp, database, workers)
