"""Load on the competition server: N teams submit at once through the real HTTP server; all must be scored.

    .venv/bin/python benchmarks/competition_load.py --submissions 50 --workers 2 --data-dir ../shared/data

An MNIST competition (hidden half, the course's metric) is made in a temporary folder, N teams get
tokens (`cnnlab serve tokens`), and `cnnlab serve competition` runs as a subprocess (uvicorn, SQLite,
W scoring processes of one thread each). N threads then each upload their own LeNet-5 (untrained,
seeded: N different files, 246 KB each, so no upload is a duplicate) at the same moment, through
`POST /api/submissions`, and poll until theirs is scored or failed. Reported: accepted uploads and
their HTTP round trip, submissions scored / failed / still waiting (nothing may be lost), the wall
time from the first upload to the last scoring, throughput in submissions per minute, and the time
from upload to score (median, 90th percentile, worst), read from the database's own timestamps;
then the machine (`cnnlab env`), the date and the load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def models(n: int, classes) -> list[bytes]:
    import torch

    from cnnlab.models import create_model
    from cnnlab.workflows.export import model_metadata, onnx_bytes

    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        net = create_model("lenet5", num_classes=10, in_channels=1, input_size=28).eval()
        out.append(onnx_bytes(net, model_metadata("lenet5", (1, 28, 28), classes, [0.1307], [0.3081], "onnx")))
    return out


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--submissions", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2, help="scoring processes")
    ap.add_argument("--data-dir", default=os.environ.get("CNNLAB_DATA_DIR"))
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--keep", action="store_true", help="keep the competition's folder (database, files, logs)")
    args = ap.parse_args()

    from cnnlab.data import load_dataset
    from cnnlab.envinfo import environment

    classes = load_dataset("mnist", args.data_dir).classes
    folder = Path(tempfile.mkdtemp(prefix="cnnlab-load-"))
    comp = folder / "competition.yaml"
    comp.write_text(yaml.safe_dump({
        "name": "load", "title": "Load test", "dataset": "mnist", "data_dir": args.data_dir,
        "deadline": "2099-01-01T00:00:00Z", "daily_limit": 10, "hidden_fraction": 0.5,
        "rate_limit": 100 * args.submissions, "workers": args.workers, "storage": "data"}))
    cmd = [sys.executable, "-m", "cnnlab", "serve"]
    teams = [f"team{i:03d}" for i in range(args.submissions)]
    tokens = json.loads(subprocess.run(cmd + ["tokens", str(comp), "--teams", ",".join(teams), "--json"],
                                       check=True, capture_output=True, text=True).stdout)
    files = models(args.submissions, classes)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    load_before = os.getloadavg()
    server = subprocess.Popen(cmd + ["competition", str(comp), "--port", str(port)], start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.2)

        results, lock = {}, threading.Lock()
        go = threading.Barrier(args.submissions)

        def team(i):
            auth = {"Authorization": f"Bearer {tokens[teams[i]]}"}
            with httpx.Client(timeout=120) as client:
                go.wait()
                t = time.perf_counter()
                r = client.post(f"{url}/api/submissions", headers=auth, files={"model": ("model.onnx", files[i])})
                upload = time.perf_counter() - t
                if r.status_code != 202:
                    with lock:
                        results[i] = {"upload": upload, "status": f"refused {r.status_code}: {r.text[:100]}"}
                    return
                sub = r.json()
                end = time.monotonic() + args.timeout
                while time.monotonic() < end:
                    state = client.get(f"{url}/api/submissions/{sub['id']}", headers=auth).json()["status"]
                    if state in ("scored", "failed"):
                        break
                    time.sleep(0.25)
                with lock:
                    results[i] = {"upload": upload, "status": state, "id": sub["id"]}

        threads = [threading.Thread(target=team, args=(i,)) for i in range(args.submissions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        load_after = os.getloadavg()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)

    from sqlalchemy import select

    from cnnlab.serve.config import load_competition
    from cnnlab.serve.db import Submission, open_database

    db = open_database(load_competition(comp).database_url())
    with db.session() as s:
        rows = s.execute(select(Submission)).scalars().all()
    scored = [r for r in rows if r.status == "scored"]
    latency = [(r.finished_at - r.created_at).total_seconds() for r in rows if r.finished_at]
    first, last = min(r.created_at for r in rows), max(r.finished_at for r in rows if r.finished_at)
    wall = (last - first).total_seconds()
    uploads = [v["upload"] for v in results.values()]
    env = environment()
    states = {st: sum(v["status"] == st for v in results.values()) for st in {v["status"] for v in results.values()}}
    print(f"date              {dt.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"machine           {env['cpu_model']}, {env['cpu_cores']} cores at {env['cpu_mhz']:.0f} MHz, "
          f"{env['memory_gib']} GiB; torch {env['torch']}, python {env['python']}")
    print(f"load average      {load_before[0]:.2f} before, {load_after[0]:.2f} at the end (1 min)")
    print(f"submissions       {args.submissions} at once; {len(rows)} in the database; states {states}")
    print(f"scored            {len(scored)}  failed {sum(r.status == 'failed' for r in rows)}  "
          f"lost {args.submissions - len(rows)}  still waiting {sum(r.status in ('queued', 'running') for r in rows)}")
    print(f"upload (HTTP)     median {statistics.median(uploads):.2f} s, worst {max(uploads):.2f} s")
    print(f"wall              {wall:.1f} s from the first upload to the last score, {args.workers} scoring processes")
    print(f"throughput        {60 * len(scored) / wall:.1f} submissions per minute")
    print(f"time to score     median {statistics.median(latency):.1f} s, 90th percentile {percentile(latency, 0.9):.1f} s, "
          f"worst {max(latency):.1f} s")
    print(f"scoring alone     median {statistics.median(r.result['seconds'] for r in scored):.2f} s per submission "
          "(inference on 10,000 images and costing, in the scoring process)")
    db.close()
    if args.keep:
        print(f"folder            {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    if len(scored) != args.submissions:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
