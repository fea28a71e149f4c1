"""What a run directory holds, read once for its figures and its report: RunFiles.

    files = read_run("runs/x")            # label: the directory's name (or read_run(path, "a/seed0"))
    files.summary, files.metrics          # summary.json (None until it finished), metrics.csv rows
    files.short_status                    # "finished" | "stopped" | "did not finish" (RunDir.status)
    files.model()                         # the trained model (cnnlab.dirs.LoadedRun), or None
    files.notes                           # topic -> why something is absent, e.g. {"bench": "..."}

Absent files are None or [] and a damaged JSON file is a note, never an error, so a report of a
crashed or half-written run still gets written. The run's state comes from its structured files
(summary.json, state.json: `RunDir.status`), never from train.log, whose last lines are kept only
to be shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cnnlab.config import TrainConfig
from cnnlab.dirs import LoadedRun, RunDir, load_run
from cnnlab.errors import CnnlabError

UNFINISHED = "did not finish (no summary.json: it crashed, was killed, or is still training)"


@dataclass
class RunFiles:
    """What a run directory holds, read once; absent files are None / [] and explained in `notes`."""

    dir: RunDir
    label: str
    config: TrainConfig | None = None
    summary: dict | None = None
    metrics: list = field(default_factory=list)
    iterations: list = field(default_factory=list)
    saved_evaluation: dict | None = None  # the test split's evaluation.json (`cnnlab evaluate`)
    score: dict | None = None
    bench: list | None = None
    log: list = field(default_factory=list)  # train.log's lines, to show (nothing is read from them)
    state: tuple = ("did not finish", None)  # RunDir.status(): (state, why it stopped or None)
    notes: dict = field(default_factory=dict)  # topic -> note
    _loaded: object = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def short_status(self) -> str:
        """'finished', 'stopped' (the trainer recorded why) or 'did not finish'."""
        return self.state[0]

    @property
    def status(self) -> str:
        """'finished', or why not, in a few words."""
        state, why = self.state
        if state == "stopped":
            if not why:
                return state
            return why if why.startswith("stopped") else f"stopped: {why}"
        return UNFINISHED if state == "did not finish" else state

    def model(self) -> LoadedRun | None:
        """The run's best weights as a PyTorch model (`load_run`), or None with a note why not."""
        if self._loaded is None and not (self.dir.best.exists() or self.dir.last.exists()):
            self._loaded = False
            self.notes["model"] = ("no checkpoint was written yet (the run stopped before its first save), so there "
                                   "is no trained model: no filters and no test evaluation")
        if self._loaded is None:
            try:
                self._loaded = load_run(self.dir.path)
            except CnnlabError as e:
                self._loaded = False
                self.notes["model"] = f"the trained model could not be loaded: {e}"
        return self._loaded or None

    def cost_model(self):
        """(model, input shape) to cost: the trained model, or, when the run has no checkpoint yet,
        the network its config trains (`cnnlab.build.build_for`) on the dataset's input shape;
        (None, None) when neither can be had (the shape is then known only from the data files)."""
        run = self.model()
        if run is not None:
            return run.model, tuple(run.data["shape"])
        if self.config is None:
            return None, None
        from cnnlab.build import build_for
        from cnnlab.data.registry import dataset_input

        where = dataset_input(self.config.dataset)
        if where is None:
            return None, None
        shape, classes = where
        try:
            return build_for(self.config, shape, classes), tuple(shape)
        except CnnlabError:
            return None, None


def read_run(run_dir, label: str | None = None) -> RunFiles:
    """Read a run directory's files; a damaged JSON file becomes a note, not an error."""
    rd = RunDir(run_dir).check()
    files = RunFiles(rd, label or rd.path.name)
    try:
        files.config = TrainConfig.load(rd.config)
    except CnnlabError as e:
        files.notes["config"] = str(e)
    for attr, path in (("summary", rd.summary), ("saved_evaluation", rd.evaluation_files("test")[0]),
                       ("score", rd.score), ("bench", rd.bench_json)):
        try:
            setattr(files, attr, rd.read_json(path))
        except CnnlabError as e:
            files.notes[attr] = str(e)
    for attr, read, key in (("metrics", rd.read_metrics, "epoch"), ("iterations", rd.read_iterations, "step")):
        try:
            setattr(files, attr, [r for r in read() if key in r])
        except (CnnlabError, OSError) as e:  # a damaged file: its line and value, in the notes
            files.notes[attr] = str(e)
    files.log = rd.read_log()
    files.state = rd.status()
    if not files.metrics and "metrics" not in files.notes:
        files.notes["metrics"] = ("no epoch has finished yet (metrics.csv is missing or empty), so there are no "
                                  "accuracy curves")
    if not files.iterations and not files.metrics and "iterations" not in files.notes:
        files.notes["iterations"] = "no training step was recorded (iterations.csv is missing or empty)"
    if files.summary is None and "summary" not in files.notes:
        files.notes["summary"] = (f"the run {files.short_status} (no summary.json), so it has no final test result; "
                                  "its figures show what it recorded")
    return files
