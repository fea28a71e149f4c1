"""The search file's keys for its two stages: how trials are screened (pruner, fidelity, bound) and the final stage.

    pruning = load_pruning(d, at, epochs=4, objectives=["competition"])   # a Pruning
    final = load_final(d, at, base, searched={"lr"})                       # a Final, or None

    prune: hyperband           # hyperband | halving | median (= true) | false
    fidelity: {min_epochs: 1, max_epochs: 9, reduction_factor: 3}   # hyperband and halving only
    bound_prune: true          # a candidate whose cycles / 300000 alone reach the best metric never trains
    final: {top_k: 3, epochs: 30, seeds: 1, train: {val_size: 5000}}
    final: {top_k: 2, epochs: 40, seeds: 3, select_seeds: 1}   # the winner alone trains its 2nd and 3rd seed
    final: {top_k: 2, same_within: 0}   # finalists distinct in any searched value (default 0.1: 10 %)

Fidelity is epochs. A trial trains up to `max_epochs` (the base's `epochs` when left out) and
reports its running objective after each epoch; Optuna's successive halving stops it at a rung
(min_epochs * reduction_factor^k epochs) unless it is among the best 1 / reduction_factor of the
trials that reached that rung; Hyperband runs several such brackets, each starting its rungs later.

The final stage retrains the `top_k` best candidates (competition metric on the validation split;
a trial of the same model whose searched numbers are within `same_within` of a better one's, its
test-time keys aside, is that candidate again and not a finalist) with the full budget: each
trial's own config with `epochs`, the seed of each of `seeds` runs, and the keys of `train` replaced.
`train` may not name a searched key (each candidate keeps its own value), nor model, out, seed or
epochs (given here by the stage itself). With `select_seeds` below `seeds`, every finalist trains
`select_seeds` runs, the winner is chosen on those, and the winner alone trains the rest: its mean
± std is over `seeds` runs, at top_k * select_seeds + seeds - select_seeds runs instead of top_k *
seeds (4 instead of 6 for the line above).

`at` names a place of the file for an error line (space.Where); every problem is one CnnlabError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cnnlab.errors import CnnlabError

PRUNERS = ("hyperband", "halving", "median", "none")
FIDELITY_KEYS = ("min_epochs", "max_epochs", "reduction_factor")
FINAL_KEYS = ("top_k", "epochs", "seeds", "select_seeds", "same_within", "train")
TEST_TIME = ("tta",)  # training config keys that change how a trained net predicts, not how it trains
FINAL_OWN = ("model", "out", "seed", "epochs")  # the final stage sets these itself


@dataclass(frozen=True)
class Pruning:
    pruner: str = "median"  # one of PRUNERS
    min_epochs: int = 1
    max_epochs: int | None = None  # None: the base's epochs stand
    reduction_factor: int = 3
    bound: bool = True

    @property
    def rungs(self) -> list[int]:
        """Epochs at which successive halving may stop a trial (every bracket's rungs together)."""
        if self.pruner not in ("hyperband", "halving") or self.max_epochs is None:
            return []
        n = int(math.floor(math.log(self.max_epochs / self.min_epochs, self.reduction_factor) + 1e-9))
        return [self.min_epochs * self.reduction_factor ** k for k in range(n + 1)
                if self.min_epochs * self.reduction_factor ** k < self.max_epochs]


@dataclass(frozen=True)
class Final:
    top_k: int = 3
    epochs: int = 1
    seeds: int = 1
    train: dict = field(default_factory=dict)
    select_seeds: int | None = None  # runs per finalist before the winner is chosen; None: all `seeds`
    same_within: float = 0.1  # two trials of one model whose searched numbers differ by less are one finalist

    @property
    def screening(self) -> int:
        """Each finalist's runs that choose the winner (seeds base .. base + screening - 1)."""
        return self.seeds if self.select_seeds is None else min(self.select_seeds, self.seeds)


def _count(v, where: str, least: int = 1, what: str = "a whole number") -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < least:
        raise CnnlabError(f"{where} must be {what} of at least {least}, got {v!r}")
    return v


def load_pruning(d: dict, at, epochs: int, objectives: list) -> Pruning:
    """The file's prune, fidelity and bound_prune keys, checked; `epochs` is the base's."""
    prune = d.get("prune", True)
    name = {True: "median", False: "none"}.get(prune, prune) if isinstance(prune, bool) or prune in PRUNERS else None
    if name is None:
        raise CnnlabError(f"{at('prune')}: unknown pruner {prune!r}: choose hyperband, halving, median (or true) "
                          "or false")
    fid = d.get("fidelity")
    if fid is not None and not isinstance(fid, dict):
        raise CnnlabError(f"{at('fidelity')} must be a mapping, e.g. {{min_epochs: 1, reduction_factor: 3}}, "
                          f"got {fid!r}")
    fid = dict(fid or {})
    if fid and name not in ("hyperband", "halving"):
        raise CnnlabError(f"{at('fidelity')}: fidelity sets the rungs of prune: hyperband or halving, but prune is "
                          f"{prune!r}: set prune: hyperband, or drop fidelity")
    unknown = sorted(set(map(str, fid)) - set(FIDELITY_KEYS))
    if unknown:
        raise CnnlabError(f"{at('fidelity', unknown[0])}: unknown key (fidelity has {', '.join(FIDELITY_KEYS)})")
    if name in ("hyperband", "halving") and len(objectives) > 1:
        raise CnnlabError(f"{at('prune')}: prune: {name} needs one objective (Optuna's pruners compare one value), "
                          f"and the search has {len(objectives)}: use prune: false, or one objective")
    low = _count(fid.get("min_epochs", 1), at("fidelity", "min_epochs"))
    high = _count(fid.get("max_epochs", epochs), at("fidelity", "max_epochs"))
    eta = _count(fid.get("reduction_factor", 3), at("fidelity", "reduction_factor"), 2)
    if "max_epochs" in fid and "epochs" in d.get("base", {}) and high != epochs:
        raise CnnlabError(f"{at('fidelity', 'max_epochs')}: {high} disagrees with base.epochs {epochs}: give the "
                          "trials' epochs once")
    if name in ("hyperband", "halving") and low >= high:
        raise CnnlabError(f"{at('fidelity', 'min_epochs')}: the first rung ({low} epochs) must come before the "
                          f"trials' last epoch ({high}): lower min_epochs, or raise max_epochs")
    bound = d.get("bound_prune", True)
    if not isinstance(bound, bool):
        raise CnnlabError(f"{at('bound_prune')} must be true or false, got {bound!r}")
    return Pruning(name, low, high if name in ("hyperband", "halving") else None, eta, bound)


def load_final(d: dict, at, base: dict, searched: set, top_k: int | None = None) -> Final | None:
    """The file's `final` block, checked (None when absent or false); `top_k` (--final-top-k)
    replaces its top_k."""
    from cnnlab.config import TrainConfig

    f = d.get("final")
    if f is None or f is False:
        if top_k is not None:
            raise CnnlabError(f"--final-top-k needs a final stage, and {at()} has no `final`: add e.g. "
                              "final: {top_k: 3, epochs: 30}")
        return None
    if not isinstance(f, dict):
        raise CnnlabError(f"{at('final')} must be a mapping, e.g. {{top_k: 3, epochs: 30, seeds: 1}}, or false; "
                          f"got {f!r}")
    unknown = sorted(set(map(str, f)) - set(FINAL_KEYS))
    if unknown:
        raise CnnlabError(f"{at('final', unknown[0])}: unknown key (final has {', '.join(FINAL_KEYS)})")
    k = _count(top_k, "--final-top-k") if top_k is not None else _count(f.get("top_k", 3), at("final", "top_k"))
    epochs = _count(f.get("epochs", TrainConfig.from_dict({**base, "out": None}).epochs), at("final", "epochs"))
    seeds = _count(f.get("seeds", 1), at("final", "seeds"))
    select = f.get("select_seeds")
    if select is not None and _count(select, at("final", "select_seeds")) > seeds:
        raise CnnlabError(f"{at('final', 'select_seeds')}: {select} is more than final.seeds ({seeds}): the winner's "
                          "seeds include the ones that chose it; lower select_seeds or raise seeds")
    within = f.get("same_within", Final.same_within)
    if not isinstance(within, (int, float)) or isinstance(within, bool) or not 0 <= within < 1:
        raise CnnlabError(f"{at('final', 'same_within')} must be a fraction from 0 (only equal values are one "
                          f"candidate) to below 1, e.g. 0.1, got {within!r}")
    train = f.get("train") or {}
    if not isinstance(train, dict):
        raise CnnlabError(f"{at('final', 'train')} must be a mapping of training config keys to values, got {train!r}")
    for key in map(str, train):
        where = at("final", "train", key)
        if key in FINAL_OWN:
            own = {"model": "the candidate's own", "out": "final_runs/ in the search directory",
                   "seed": "final.seeds", "epochs": "final.epochs"}[key]
            raise CnnlabError(f"{where}: the final stage sets {key} itself ({own}): leave it out")
        if key in searched:
            raise CnnlabError(f"{where}: {key} is searched (space.train.{key}): each finalist keeps its own value, "
                              "so the final stage cannot set it")
        if key not in TrainConfig.__dataclass_fields__:
            raise CnnlabError(f"{where}: not a training config key (`cnnlab train --help` lists them)")
    TrainConfig.from_dict({**base, **train, "epochs": epochs, "out": None}, where=at("final", "train"))
    return Final(k, epochs, seeds, dict(train), select, float(within))
