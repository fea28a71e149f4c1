"""Reading a pretrained SOURCE (`cnnlab train --pretrained SOURCE`) into a state dict.

    source = read_source("runs/cifar-base")                          # a cnnlab run directory (its best.pt)
    source = read_source("RUN/checkpoints/last.pt")                  # a cnnlab checkpoint
    source = read_source("resnet18.pth")                             # a PyTorch state dict (torchvision, timm, ...)
    source = read_source("model.safetensors")                        # a safetensors file (timm, `cnnlab export`)
    source = read_source("https://host/resnet18-f37072fd.pth#sha256=f37072fd")   # downloaded, checked, cached

A URL is downloaded once, with a progress bar, into pretrained/ in cnnlab's cache
(cnnlab.envinfo.user_cache_dir: `$CNNLAB_CACHE_DIR`, else ~/.cache/cnnlab) and reused from there.
An expected hash (`#sha256=HEX` on the source, or `--pretrained-hash sha256:HEX`; `md5:HEX` too;
a prefix of 8 or more hex digits will do, as in torchvision's file names) is checked on every
read, downloaded or local; a download that does not match is never kept. A downloaded file is read as weights only (torch.load with
`weights_only=True`, or safetensors), never unpickled; a local cnnlab checkpoint is read as cnnlab
reads its own checkpoints.

A state dict is found inside the usual wrappers (`state_dict`, `model`, `model_state`, ...); the
`module.` / `_orig_mod.` prefixes of DistributedDataParallel and torch.compile are dropped when it
is matched (cnnlab.weights.layouts).
Anything unusable (a missing path, a directory that is not a run, a file that is not PyTorch or
safetensors, a file without tensors, a hash that differs) is one CnnlabError line.

Nothing is kept between reads: each `read_source` reads the file again (the run's validation and
its start both do; see cnnlab.train.transfer.plan for what that costs).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnnlab.checkpoint import load_checkpoint
from cnnlab.data.download import download
from cnnlab.data.sources import RemoteFile
from cnnlab.dirs import RunDir
from cnnlab.envinfo import user_cache_dir
from cnnlab.errors import CnnlabError, DataError

_HASH = re.compile(r"^(?:(sha256|md5)[:=])?([0-9a-fA-F]{8,64})$")
_FRAGMENT = re.compile(r"^(.*)#(sha256|md5)=([0-9a-fA-F]{8,64})$")
_WRAPPERS = ("state_dict", "model_state", "model_state_dict", "model", "net", "module", "params", "weights")


@dataclass
class Source:
    """A pretrained source, read: its tensors and where they came from."""

    spec: str  # as the user gave it
    file: Path  # the file read (a run directory's checkpoint, the cached download, ...)
    kind: str  # cnnlab run | cnnlab checkpoint | state dict | safetensors
    state: dict = field(repr=False)
    sha256: str = ""
    url: str | None = None
    meta: dict = field(default_factory=dict)  # a cnnlab source's model, model_args, dataset, shape, classes

    def describe(self) -> dict:
        return {"source": self.spec, "file": str(self.file), "kind": self.kind, "sha256": self.sha256,
                "url": self.url, **{f"source_{k}": v for k, v in self.meta.items()}}


def is_url(spec: str) -> bool:
    return str(spec).lower().startswith(("http://", "https://"))


def parse_hash(text: str, where: str = "--pretrained-hash") -> tuple[str, str]:
    """('sha256' | 'md5', lower-case hex) from 'sha256:HEX', 'md5:HEX' or bare hex (64 digits or a
    prefix of 8+: SHA-256; exactly 32: MD5)."""
    m = _HASH.match(str(text).strip())
    if not m:
        raise CnnlabError(f"{where} must be sha256:HEX (or md5:HEX; 8 or more hex digits), got {text!r}")
    algo, digest = m.group(1), m.group(2).lower()
    if algo is None:
        algo = "md5" if len(digest) == 32 else "sha256"
    if algo == "md5" and len(digest) != 32:
        raise CnnlabError(f"{where}: an MD5 has 32 hex digits, got {len(digest)}")
    return algo, digest


def split_source(spec: str, pretrained_hash: str | None = None) -> tuple[str, tuple | None]:
    """(location, expected hash or None): a `#sha256=HEX` suffix and `--pretrained-hash` must agree."""
    spec = str(spec).strip()
    expected = None
    m = _FRAGMENT.match(spec)
    if m:
        spec, expected = m.group(1), parse_hash(f"{m.group(2)}:{m.group(3)}", "the source's #hash")
    if pretrained_hash:
        given = parse_hash(pretrained_hash)
        if expected and (given[0] != expected[0] or not (given[1].startswith(expected[1])
                                                          or expected[1].startswith(given[1]))):
            raise CnnlabError(f"--pretrained-hash {pretrained_hash} differs from the source's own "
                              f"#{expected[0]}={expected[1]}: give one")
        expected = given if not expected or len(given[1]) >= len(expected[1]) else expected
    return spec, expected


def file_digest(path, algo: str = "sha256") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def check_hash(path, expected: tuple | None, what: str):
    """Raise unless the file's digest starts with the expected one."""
    if expected is None:
        return
    algo, want = expected
    got = file_digest(path, algo)
    if not got.startswith(want):
        raise CnnlabError(f"{what} has {algo.upper()} {got}, not the expected {want}: it is not the file you asked "
                          "for (or it was damaged); check the hash, or download it again")


def cached_path(url: str) -> Path:
    """Where the download of `url` is kept: cnnlab's cache, pretrained/<hash of the URL>-<file name>."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]) or "weights"
    return user_cache_dir("pretrained") / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"


def fetch(url: str, expected: tuple | None) -> Path:
    """The cached copy of `url`, downloaded first if need be (progress bar, hash checked, atomic)."""
    dest = cached_path(url)
    if dest.exists():
        try:
            check_hash(dest, expected, f"the cached copy of {url} ({dest})")
            return dest
        except CnnlabError:
            dest.unlink(missing_ok=True)  # an older or damaged copy: fetch it again

    def verify(tmp):
        try:
            check_hash(tmp, expected, f"the download of {url}")
        except CnnlabError as e:
            raise DataError(str(e)) from None

    download(RemoteFile(dest.name, url, ""), dest, timeout=60.0, verify=verify)
    return dest


def _tensors_only(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _find_state_dict(obj, where: str) -> dict:
    """The state dict in a loaded object: the object itself, or inside a usual wrapper key."""
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        tensors = _tensors_only(obj)
        if tensors:
            return tensors
        for key in _WRAPPERS:
            inner = obj.get(key)
            if isinstance(inner, torch.nn.Module):
                return inner.state_dict()
            if isinstance(inner, dict) and _tensors_only(inner):
                return _tensors_only(inner)
        keys = ", ".join(map(str, list(obj)[:6])) or "nothing"
        raise CnnlabError(f"{where} holds no state dict (a mapping of names to tensors): it has {keys}; "
                          "give a cnnlab run directory or checkpoint, or a PyTorch or safetensors state dict")
    raise CnnlabError(f"{where} holds a {type(obj).__name__}, not a state dict: give a cnnlab run directory or "
                      "checkpoint, or a PyTorch or safetensors state dict")


def _cnnlab_meta(ckpt: dict) -> dict:
    cfg, data = ckpt.get("config") or {}, ckpt.get("data") or {}
    meta = {"model": cfg.get("model"), "model_args": cfg.get("model_args") or {}, "dataset": cfg.get("dataset"),
            "shape": data.get("shape"), "classes": data.get("classes")}
    if cfg.get("resize") or cfg.get("input_channels"):
        meta.update(resize=cfg.get("resize"), input_channels=cfg.get("input_channels"))
    return meta


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 28)


def _read_safetensors(path: Path, where: str) -> tuple[dict, dict]:
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover - a dependency of cnnlab
        raise CnnlabError("reading a safetensors file needs the safetensors package: pip install safetensors") from None
    try:
        state, meta = {}, {}
        with safe_open(str(path), framework="pt") as f:
            for k in f.keys():
                state[k] = f.get_tensor(k)
            extra = f.metadata() or {}
        if extra.get("cnnlab"):  # written by `cnnlab export`
            m = json.loads(extra["cnnlab"])
            meta = {"model": m.get("model"), "model_args": m.get("model_args") or {},
                    "dataset": (m.get("dataset") or {}).get("name"), "shape": (m.get("input") or {}).get("shape"),
                    "classes": m.get("classes")}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a bad file
        raise CnnlabError(f"{where} is not a readable safetensors file ({str(e).splitlines()[0][:100]})") from None
    return state, meta


def _read_file(path: Path, where: str, trusted: bool) -> tuple[str, dict, dict]:
    """(kind, state dict, meta) of a PyTorch or safetensors file."""
    if _is_safetensors(path):
        state, meta = _read_safetensors(path, where)
        return "safetensors", state, meta
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" not in str(e).lower():  # not a pickle of weights and objects: not a PyTorch file
            raise CnnlabError(f"{where} is not a PyTorch or safetensors file (UnpicklingError): give a cnnlab run "
                              "directory or checkpoint, or a PyTorch or safetensors state dict") from None
        # more than weights in it (e.g. a cnnlab checkpoint's RNG states): only a local file is unpickled
        if not trusted:
            raise CnnlabError(f"{where} holds more than weights (torch.load with weights_only=True refuses it), and "
                              "cnnlab never unpickles a downloaded file: publish a plain state dict or a safetensors "
                              "file (`cnnlab export RUN --format safetensors`)") from None
        try:
            ckpt = load_checkpoint(path)
        except CnnlabError:
            raise CnnlabError(f"{where} holds more than weights and is not a cnnlab checkpoint: save the model's "
                              "state_dict() (torch.save(model.state_dict(), path)) and give that") from None
        return "cnnlab checkpoint", ckpt["model_state"], _cnnlab_meta(ckpt)
    except (zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError, UnicodeDecodeError) as e:
        raise CnnlabError(f"{where} is not a PyTorch or safetensors file ({type(e).__name__}): give a cnnlab run "
                          "directory or checkpoint, or a PyTorch or safetensors state dict") from None
    if isinstance(obj, dict) and obj.get("format") == "cnnlab-checkpoint":
        return "cnnlab checkpoint", _find_state_dict(obj.get("model_state"), where), _cnnlab_meta(obj)
    return "state dict", _find_state_dict(obj, where), {}


def read_source(spec: str, pretrained_hash: str | None = None) -> Source:
    """Read a pretrained source; raise a one-line CnnlabError when it is not usable."""
    location, expected = split_source(spec, pretrained_hash)
    url = None
    if is_url(location):
        url, path, trusted = location, fetch(location, expected), False
    else:
        path, trusted = Path(location).expanduser(), True
        if not path.exists():
            raise CnnlabError(f"--pretrained {location} does not exist: give a cnnlab run directory or checkpoint, a "
                              "PyTorch or safetensors state dict, or a URL")
    kind = None
    if path.is_dir():
        run = RunDir(path)
        if not run.is_run():
            raise CnnlabError(f"--pretrained {location} is a directory but not a cnnlab run directory (no config.yaml "
                              "and checkpoints/): give a run directory, a checkpoint or a weights file")
        path = run.best if run.best.exists() else run.last
        if not path.exists():
            raise CnnlabError(f"--pretrained {location} has no checkpoint yet: train it (or let it reach its first "
                              "epoch's end) first")
        kind = "cnnlab run"
    path = path.resolve()
    if not url:
        check_hash(path, expected, f"--pretrained {location}")
    where = f"--pretrained {spec}"
    file_kind, state, meta = _read_file(path, where, trusted)
    state = _tensors_only(state)
    if not state:
        raise CnnlabError(f"{where} holds no tensors: give a cnnlab run directory or checkpoint, or a state dict")
    return Source(str(spec), path, kind or file_kind, state, file_digest(path), url, meta)
