"""The scoring workers: queued submissions scored in separate processes under time and memory limits.

    workers = Dispatcher(comp, db, processes=2); workers.start()   # two threads, each with one process
    workers.wake()            # a submission was queued: look now rather than at the next poll
    workers.stop()            # the processes are killed; running submissions go back to the queue

Each thread owns one scoring process (`python -m cnnlab.serve.worker COMPETITION.yaml`) that
loads the test split once and scores one file at a time: a JSON line in (the files), a JSON line
out (the figures, or why the file was refused). Its address space is capped (RLIMIT_AS, the
competition's memory_limit), so a model that allocates too much fails there. A scoring that runs
past the time limit gets its process killed (and a new one started) and fails with the reason.
Starting a process costs about 2 s (torch, ONNX Runtime, the dataset); one per job would cost more
than scoring a small model, hence long-lived processes.

Nothing is lost. A thread claims a queued submission in one transaction (status running, a lease
of `comp.lease` seconds, renewed while it runs), so two workers, in one server or on several
machines sharing the database and storage, never take the same one. A scoring process that dies
(killed, crashed) puts its submission back in the queue; after MAX_ATTEMPTS tries it fails with
the reason. A server killed mid-job leaves a running row whose lease expires: every worker's loop
gives such rows back to the queue (or fails them after MAX_ATTEMPTS), so a restarted server, or
another worker, scores them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

from sqlalchemy import select as sql_select
from sqlalchemy.exc import SQLAlchemyError

from cnnlab.errors import CnnlabError
from cnnlab.serve.db import Submission, utcnow
from cnnlab.serve.submit import csv_path, model_path

MAX_ATTEMPTS = 3
POLL = 1.0  # seconds between looks at the queue when nobody wakes the workers
START_SECONDS = 120  # a scoring process must be ready by then


class Outcome:
    def __init__(self, status: str, result=None, error: str | None = None):
        self.status, self.result, self.error = status, result, error  # status: scored | failed | retry


# ---- the scoring process --------------------------------------------------------------------------

def _child(config_path: str):
    """`python -m cnnlab.serve.worker CONFIG`: limits, the test split, then one JSON line per job."""
    import resource

    from cnnlab.serve.config import load_competition

    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed goes to the log, never into the answers
    comp = load_competition(config_path)
    resource.setrlimit(resource.RLIMIT_AS, (comp.memory_limit, comp.memory_limit))
    from cnnlab.serve.scoring import Scorer

    scorer = Scorer(comp)
    out.write(json.dumps({"ready": os.getpid()}) + "\n")
    for line in sys.stdin:
        job = json.loads(line)
        try:
            answer = {"scored": scorer.score(job["model"], job.get("csv"))}
        except CnnlabError as e:
            answer = {"failed": str(e)}
        except MemoryError:
            answer = {"failed": _out_of_memory(comp)}
        except Exception as e:  # the runtime's own errors on a file that passed the checks  # noqa: BLE001
            text = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
            answer = {"failed": _out_of_memory(comp) if "alloc" in str(e).lower() else
                      f"the model could not be scored ({text})"}
        out.write(json.dumps(answer) + "\n")


def _out_of_memory(comp) -> str:
    return (f"scoring ran out of memory (the limit is {comp.memory_limit / 1e9:.1f} GB per scoring): make the model "
            "smaller")


class ScoringProcess:
    """One scoring process and the pipe to it."""

    def __init__(self, comp, log_file):
        self.comp = comp
        self.tick_every = min(2.0, comp.lease / 3)  # heartbeats well inside the lease
        self.proc = subprocess.Popen([sys.executable, "-m", "cnnlab.serve.worker", str(comp.path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file,
                                     start_new_session=True)
        self.buffer = b""
        line = self._line(time.monotonic() + START_SECONDS)
        if not line or "ready" not in line:
            self.kill()
            raise CnnlabError(f"the scoring process for {comp.path} did not start (see {log_file.name}): check "
                              "the competition's dataset, data_dir and memory_limit")
        self.pid = line["ready"]

    def _line(self, deadline: float, tick=None):
        """The next JSON line, None when the process ended, "timeout" past the deadline."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            ready, _, _ = select.select([fd], [], [], min(left, self.tick_every))
            if not ready:
                if tick:
                    tick()
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def run(self, job: dict, tick) -> Outcome:
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            return self._died()
        answer = self._line(time.monotonic() + self.comp.time_limit, tick)
        if answer == "timeout":
            self.kill()
            return Outcome("failed", error=f"scoring took longer than the competition's time limit of "
                                           f"{self.comp.time_limit:g} s: make the model faster")
        if answer is None:
            return self._died()
        if "scored" in answer:
            return Outcome("scored", answer["scored"])
        return Outcome("failed", error=answer["failed"])

    def _died(self) -> Outcome:
        code = self.proc.wait()
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            why = f"the scoring process was killed ({name})"
        else:
            why = f"the scoring process ended (exit code {code})"
        return Outcome("retry", error=why)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


# ---- the queue --------------------------------------------------------------------------------------

class Dispatcher:
    def __init__(self, comp, db, processes: int, log=None):
        self.comp, self.db, self.processes = comp, db, processes
        self.me = f"{socket.gethostname()}:{os.getpid()}"
        self.log = log or (lambda line: print(f"cnnlab serve: {line}", file=sys.stderr, flush=True))
        self.stopping = threading.Event()
        self.cond = threading.Condition()
        self.threads, self.scorers = [], {}
        self.log_dir = comp.storage / "logs"

    def start(self):
        """Start the scoring processes, side by side (a failure to start is one CnnlabError line),
        then their threads."""
        from concurrent.futures import ThreadPoolExecutor

        self.log_dir.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max(1, self.processes)) as pool:
            started = [pool.submit(self._new_process, k) for k in range(self.processes)]
        errors = [f.exception() for f in started if f.exception() is not None]
        for k, f in enumerate(started):
            self.scorers[k] = f.result() if f.exception() is None else None
        if errors:
            for p in self.scorers.values():
                if p is not None:
                    p.kill()
            raise errors[0]
        for k in range(self.processes):
            t = threading.Thread(target=self._loop, args=(k,), name=f"cnnlab-scoring-{k}", daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def _new_process(self, k: int) -> ScoringProcess:
        with open(self.log_dir / f"worker-{k}.log", "ab") as log_file:
            return ScoringProcess(self.comp, log_file)

    def wake(self):
        with self.cond:
            self.cond.notify_all()

    def stop(self):
        self.stopping.set()
        self.wake()
        for p in list(self.scorers.values()):
            if p is not None:
                p.kill()
        for t in self.threads:
            t.join(timeout=10)
        for p in list(self.scorers.values()):  # one a thread started while stopping
            if p is not None:
                p.kill()

    def pids(self) -> list[int]:
        return [p.pid for p in self.scorers.values() if p is not None and p.alive()]

    # the loop of one thread
    def _loop(self, k: int):
        while not self.stopping.is_set():
            try:
                self.requeue_stale()
                job = self.claim()
            except SQLAlchemyError as e:
                self.log(f"the database did not answer ({str(e).splitlines()[0][:120]}); trying again")
                self.stopping.wait(POLL)
                continue
            if job is None:
                with self.cond:
                    self.cond.wait(POLL)
                continue
            outcome = self._score(k, job)
            if self.stopping.is_set() and outcome.status == "retry":
                continue  # stopped mid-job: the lease runs out and the submission is scored again
            self._finish(job, outcome)

    def _score(self, k: int, job: dict) -> Outcome:
        proc = self.scorers.get(k)
        if self.stopping.is_set():
            return Outcome("retry", error="the server stopped")
        try:
            if proc is None or not proc.alive():
                proc = self.scorers[k] = self._new_process(k)
        except CnnlabError as e:
            self.scorers[k] = None
            return Outcome("retry", error=str(e))
        files = {"model": str(model_path(self.comp, job["sha256"]))}
        if job["csv_sha256"]:
            files["csv"] = str(csv_path(self.comp, job["csv_sha256"]))
        outcome = proc.run(files, tick=lambda: self.renew(job["id"], job["claim"]))
        if not proc.alive():
            proc.kill()
            self.scorers[k] = None  # a new one at the next job
        return outcome

    # the database
    def claim(self) -> dict | None:
        """Take the oldest queued submission (running, leased to this worker), or None."""
        now = utcnow()
        with self.db.session() as s, s.begin():
            sub = s.execute(sql_select(Submission).where(Submission.competition == self.comp.name,
                                                         Submission.status == "queued")
                            .order_by(Submission.id).limit(1).with_for_update(skip_locked=True)).scalar_one_or_none()
            if sub is None:
                return None
            sub.status, sub.attempts = "running", sub.attempts + 1
            sub.started_at, sub.lease_until = now, now + dt.timedelta(seconds=self.comp.lease)
            claim = f"{self.me}:{uuid.uuid4().hex[:12]}"  # this claim alone: renew and finish check it
            sub.claimed_by = claim
            return {"id": sub.id, "sha256": sub.sha256, "csv_sha256": sub.csv_sha256, "claim": claim}

    def renew(self, sub_id: int, claim: str):
        try:
            with self.db.session() as s, s.begin():
                sub = s.get(Submission, sub_id)
                if sub is not None and sub.status == "running" and sub.claimed_by == claim:
                    sub.lease_until = utcnow() + dt.timedelta(seconds=self.comp.lease)
        except SQLAlchemyError:
            pass  # the next tick tries again; a lost lease only means the job may run twice

    def requeue_stale(self):
        """Running submissions whose lease ran out (their worker or server died) go back to the queue."""
        now = utcnow()
        with self.db.session() as s, s.begin():
            stale = s.execute(sql_select(Submission).where(Submission.competition == self.comp.name,
                                                           Submission.status == "running",
                                                           Submission.lease_until < now)
                              .with_for_update(skip_locked=True)).scalars().all()
            for sub in stale:
                self._retry(sub, "its scoring was interrupted (the server or its worker stopped)", now)
                self.log(f"submission {sub.id}: its worker went silent; {sub.status} again")

    def _retry(self, sub, why: str, now):
        sub.claimed_by, sub.lease_until = None, None
        if sub.attempts >= MAX_ATTEMPTS:
            sub.status, sub.finished_at = "failed", now
            sub.error = f"{why}, {sub.attempts} times: ask the instructor"
        else:
            sub.status = "queued"

    def _finish(self, job: dict, outcome: Outcome):
        now = utcnow()
        for attempt in range(5):
            try:
                with self.db.session() as s, s.begin():
                    sub = s.execute(sql_select(Submission).where(Submission.id == job["id"]).with_for_update()) \
                        .scalar_one_or_none()
                    if sub is None or sub.status != "running" or sub.claimed_by != job["claim"]:
                        return  # our lease ran out and another worker has it now
                    if outcome.status == "retry":
                        self._retry(sub, outcome.error, now)
                    else:
                        sub.status, sub.finished_at, sub.lease_until = outcome.status, now, None
                        sub.result, sub.error = outcome.result, outcome.error
                    self.log(f"submission {sub.id}: {sub.status}" + (f" ({sub.error})" if sub.error else ""))
                return
            except SQLAlchemyError:
                time.sleep(1 + attempt)  # the lease keeps the row; it is queued again if this never lands


if __name__ == "__main__":
    _child(sys.argv[1])
