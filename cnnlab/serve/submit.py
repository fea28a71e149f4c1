"""Taking a submission: the upload checked, stored by its hash, and queued, or refused in one line.

    facts = DatasetFacts.load(comp)                      # the competition's image shape, classes, test size
    meta = check_model(data, facts)                      # ONNX only, with cnnlab metadata that fits
    sub = enqueue(db, comp, facts, team, data, "model.onnx", csv_bytes)   # a queued Submission

What is refused, each as a `Refused` (a CnnlabError with the HTTP status the server answers):
a file over the size limit (413); a pickle or a zip (torch.save, TorchScript, .keras, OpenVINO)
or safetensors, recognised by content whatever its name (415): a pickle runs code when it is
loaded, and the server loads only ONNX protobufs, which carry none; bytes that are no ONNX model,
a model without cnnlab metadata, for other images (C x H x W) or other classes (by name,
`cnnlab.evaluate.labels_for_model`) than the competition's (400); a predictions.csv that is not
`id,label` with one row per test image (400); the same file twice from one team (409); more than
the daily limit of submissions in a UTC day (429); anything after the deadline (403).

A file is written (atomically) as SUBMISSIONS/<sha256[:2]>/<sha256>.onnx, never under the name it
was uploaded with, before its row is committed, so a worker never meets a row without its file.
The daily count and the insert are one transaction holding the team's row (`FOR UPDATE`; SQLite:
BEGIN IMMEDIATE), so two uploads at once cannot both take the last submission of a day.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write
from cnnlab.serve.db import Submission, Team, utcnow

ONNX_ONLY = ("the competition takes ONNX files only (pickle- and zip-based formats can run code when they are "
             "loaded): export the model with `cnnlab export RUN_DIR --format onnx` and upload model.onnx")
MAX_CSV = 4_000_000  # bytes of a predictions.csv


class Refused(CnnlabError):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DatasetFacts:
    name: str
    shape: tuple
    classes: tuple
    test_images: int

    @classmethod
    def load(cls, comp) -> "DatasetFacts":
        from cnnlab.data import load_dataset

        data = load_dataset(comp.dataset, comp.data_dir, min_classes=1)
        return cls(comp.dataset, tuple(int(v) for v in data.test.x.shape[1:]), tuple(data.classes), len(data.test))


def model_path(comp, sha256: str) -> Path:
    return comp.submissions_dir / sha256[:2] / f"{sha256}.onnx"


def csv_path(comp, sha256: str) -> Path:
    return comp.submissions_dir / sha256[:2] / f"{sha256}.csv"


def clean_name(name: str | None, default: str = "model.onnx") -> str:
    """An uploaded file's name as it may be shown: its last part, printable, at most 100 characters."""
    base = str(name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable()).strip()[:100]
    return base if base not in ("", ".", "..") else default


def _what_it_is(data: bytes) -> str | None:
    """What a non-ONNX upload is, by its first bytes; None when it may be ONNX."""
    if data[:2] == b"PK":
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except zipfile.BadZipFile:
            names = []
        if any(n.endswith(".pkl") for n in names):
            return "a PyTorch file (torch.save or TorchScript: pickled data in a zip archive)"
        return "a zip archive (.keras, OpenVINO or TorchScript)"
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle"
    if len(data) > 9 and data[8:9] == b"{" and int.from_bytes(data[:8], "little") < len(data):
        return "a safetensors file (weights without the network)"
    if data[:4] == b"\x89HDF":
        return "an HDF5 file"
    return None


def check_model(data: bytes, facts: DatasetFacts, label: str = "the uploaded model") -> dict:
    """The cnnlab metadata of an uploaded ONNX model that fits the competition; else Refused."""
    import onnx

    from cnnlab.workflows.export.metadata import META_KEY, parse_meta

    if not data:
        raise Refused(f"{label} is empty: choose the model.onnx that `cnnlab export` wrote")
    kind = _what_it_is(data)
    if kind:
        raise Refused(f"{label} is {kind}: {ONNX_ONLY}", 415)
    try:
        proto = onnx.load_from_string(data)
    except Exception:  # protobuf's DecodeError: not a protobuf at all  # noqa: BLE001
        proto = None
    if proto is None or not proto.graph.node:
        raise Refused(f"{label} is not an ONNX model (or a damaged one): {ONNX_ONLY}", 415)
    text = next((p.value for p in proto.metadata_props if p.key == META_KEY), None)
    try:
        meta = parse_meta(text, label)
    except CnnlabError as e:
        raise Refused(str(e)) from None
    if meta.get("export_format") not in (None, "onnx"):
        raise Refused(f"{label} is an ONNX file whose metadata says {meta['export_format']}: export it again "
                      "with `cnnlab export RUN_DIR --format onnx`")
    check_fit(meta, facts, label)
    return meta


def check_fit(meta: dict, facts: DatasetFacts, label: str = "the uploaded model"):
    """The model takes the competition's images and scores its classes (by name, any order)."""
    import torch

    from cnnlab.data.datasets import Split
    from cnnlab.evaluate import labels_for_model

    shape = tuple(int(v) for v in meta["input"]["shape"])
    if shape != facts.shape:
        raise Refused(f"{label} takes {'x'.join(map(str, shape))} images, but this competition's {facts.name} images "
                      f"are {'x'.join(map(str, facts.shape))}: train on {facts.name} and export the model again")
    classes = [str(c) for c in meta["classes"]]
    if len(classes) != len(facts.classes):
        raise Refused(f"{label} scores {len(classes)} classes, but {facts.name} has {len(facts.classes)} "
                      f"({', '.join(facts.classes)}): train on {facts.name} and export the model again")
    empty = Split(torch.zeros(0, *facts.shape, dtype=torch.uint8), torch.zeros(0, dtype=torch.long))
    try:
        labels_for_model(empty, facts.classes, classes, facts.name)
    except CnnlabError as e:
        raise Refused(f"{label}: {e}") from None


def read_predictions(data: bytes, classes, images: int) -> list[int]:
    """The labels of a predictions.csv (`cnnlab predict`: header id,label, one row per test image in
    order; a label is a class index or, with --names, a class name), as class indices."""
    if len(data) > MAX_CSV:
        raise Refused(f"predictions.csv is {len(data):,} bytes, over the limit of {MAX_CSV:,}", 413)
    try:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as e:
        raise Refused(f"predictions.csv is not a UTF-8 CSV file ({str(e)[:60]}): upload the file `cnnlab predict` "
                      "wrote") from None
    if not rows or [c.strip().lower() for c in rows[0]] != ["id", "label"]:
        raise Refused("predictions.csv must start with the header id,label (as `cnnlab predict` writes it)")
    names = {str(c): i for i, c in enumerate(classes)}
    labels = []
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or row[0].strip() != str(len(labels)):
            raise Refused(f"predictions.csv line {n}: expected id {len(labels)} and a label, got {','.join(row)[:40]!r}")
        value = row[1].strip()
        if value.isdigit() and int(value) < len(classes):
            labels.append(int(value))
        elif value in names:
            labels.append(names[value])
        else:
            raise Refused(f"predictions.csv line {n}: {value[:40]!r} is neither a class index (0-{len(classes) - 1}) "
                          "nor a class name of the model")
    if len(labels) != images:
        raise Refused(f"predictions.csv has {len(labels):,} rows, but the test set has {images:,} images: predict the "
                      "whole test split (`cnnlab predict RUN_DIR --split test`)")
    return labels


def day_start(now: dt.datetime) -> dt.datetime:
    return now.astimezone(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def _store(path: Path, data: bytes):
    if not path.exists():
        atomic_write(path, lambda f: f.write(data), mode="wb")


def enqueue(db, comp, facts: DatasetFacts, team_id: int, data: bytes, file_name: str | None,
            csv_data: bytes | None = None, now: dt.datetime | None = None) -> Submission:
    """Check, store and queue one submission of team `team_id`; Refused with the reason otherwise."""
    now = now or utcnow()
    if comp.after_deadline(now):
        raise Refused(f"the competition closed at {comp.deadline:%Y-%m-%d %H:%M} UTC: no more submissions", 403)
    if len(data) > comp.max_upload:
        raise Refused(f"the model file is {len(data):,} bytes, over the competition's limit of {comp.max_upload:,}: "
                      "make the model smaller", 413)
    meta = check_model(data, facts)
    if csv_data:
        read_predictions(csv_data, meta["classes"], facts.test_images)
    sha = hashlib.sha256(data).hexdigest()
    csv_sha = hashlib.sha256(csv_data).hexdigest() if csv_data else None
    _store(model_path(comp, sha), data)
    if csv_data:
        _store(csv_path(comp, csv_sha), csv_data)
    with db.session() as s, s.begin():
        s.execute(select(Team).where(Team.id == team_id).with_for_update()).scalar_one()
        same = s.execute(select(Submission.id).where(Submission.team_id == team_id, Submission.sha256 == sha)
                         .order_by(Submission.id)).scalars().first()
        if same is not None:
            raise Refused(f"you submitted this exact file already (submission {same}): change the model before "
                          "submitting again", 409)
        today = s.execute(select(func.count()).select_from(Submission).where(
            Submission.team_id == team_id, Submission.created_at >= day_start(now))).scalar_one()
        if today >= comp.daily_limit:
            reset = day_start(now) + dt.timedelta(days=1)
            left = int((reset - now).total_seconds() // 60)
            raise Refused(f"your team has made its {comp.daily_limit} submissions for today: the count starts again "
                          f"at 00:00 UTC, in {left // 60} h {left % 60} min", 429)
        sub = Submission(competition=comp.name, team_id=team_id, created_at=now, file_name=clean_name(file_name),
                         sha256=sha, size=len(data), csv_sha256=csv_sha, status="queued", attempts=0)
        s.add(sub)
    return sub
