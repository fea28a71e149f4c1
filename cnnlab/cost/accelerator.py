"""An analytic model of a weight-stationary accelerator, close to what Timeloop reports.

The default architecture is the "simple weight stationary" design used for class
competitions (45 nm): DRAM -> a 128 KiB global buffer (GLB) -> a 16 x 16 array of PEs,
each with a 192-word weight scratchpad (spad), three one-word registers (weight, input,
output) and a 16-bit MAC. Input channels C are spread over the 16 columns, output
channels M over the 16 rows; every other loop runs in time.

For one layer the model walks a small, fixed set of mappings (which loops sit at the
spad, the GLB and DRAM, in which order, and which data types the GLB keeps or bypasses),
counts the words moved at every level with the same tile-delta rule Timeloop uses, and
keeps the mapping with the fewest cycles, then the least energy -- the mapper's own
objective. Cycles are max(compute cycles, GLB read and write traffic / bandwidth);
DRAM bandwidth is unlimited unless `dram_words_per_cycle` is set. Energy is the access
count at each level times that level's energy per access. Layers run one after another,
so a network's cycles and energy are sums. See docs/cost.md for the derivation.

Word width: `at_bits(arch, bits)` is the design costed for 8-, 16- or 32-bit data
(`analyze(..., bits=)`). The design's figures, as given, are the 32-bit reference that the
competition's 4 B/element rule and earlier results use; `at_bits(arch, 32) is arch`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import yaml

from cnnlab.errors import CnnlabError
from cnnlab.io import dataclass_from_dict, load_yaml_mapping


@dataclass(frozen=True)
class Accelerator:
    """The architecture. Energies are per 16-bit word in pJ; sizes in words."""

    name: str = "simple-weight-stationary-256pe"
    pe_cols: int = 16  # input channels C are spread across the columns
    pe_rows: int = 16  # output channels M across the rows
    word_bits: int = 16
    glb_words: int = 65536  # 128 KiB of 16-bit words
    glb_read_words_per_cycle: float = 16
    glb_write_words_per_cycle: float = 16
    spad_words: int = 192  # per PE, weights only
    dram_words_per_cycle: float | None = None  # None: unlimited, as Timeloop's DRAM behaves
    mac_pj: float = 2.2
    reg_pj: float = 0.975  # one access of a one-word register
    reg_accesses_per_mac: int = 4  # weight read, input read, output read and update
    spad_pj: float = 1.586
    glb_read_pj: float = 74.144 / 4  # a 4-word block read, per word
    glb_write_pj: float = 75.215 / 4
    dram_pj: float = 512 / 4  # a 64-bit LPDDR4 access moves 4 words
    clock_mhz: float = 1000.0  # only to turn cycles into seconds

    @classmethod
    def from_dict(cls, d: dict, where: str = "architecture") -> "Accelerator":
        arch = dataclass_from_dict(cls, d, where)
        for f in ("pe_cols", "pe_rows", "glb_words", "spad_words", "reg_accesses_per_mac"):
            if not isinstance(getattr(arch, f), int) or getattr(arch, f) < 1:
                raise CnnlabError(f"'{f}' in {where} must be a positive integer, got {getattr(arch, f)!r}")
        return arch

    @classmethod
    def load(cls, path) -> "Accelerator":
        d = load_yaml_mapping(path, "architecture file")
        if not d:  # an empty or truncated file would otherwise cost on the default design, unnoticed
            raise CnnlabError(f"architecture file {path} is empty: give the keys that differ from the default "
                              "design (docs/cost.md), or leave --arch out to use it")
        return cls.from_dict(d, where=str(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)


DEFAULT_ACCELERATOR = Accelerator()

# ---------------------------------------------------------------- word width

WORD_BITS = (8, 16, 32)
# Energy of one multiply plus one add, 45 nm (M. Horowitz, "Computing's energy problem (and
# what we can do about it)", ISSCC 2014, table on p. 10): 8-bit int add 0.03 pJ + mult 0.2 pJ;
# 16-bit float add 0.4 pJ + mult 1.1 pJ; 32-bit float add 0.9 pJ + mult 3.7 pJ.
_MAC_PJ_HOROWITZ = {8: 0.03 + 0.2, 16: 0.4 + 1.1, 32: 0.9 + 3.7}


def mac_energy_scale(bits: int) -> float:
    """MAC energy at `bits` relative to 32 bits (Horowitz 2014): 0.05 at 8, 0.326 at 16, 1 at 32."""
    return 1.0 if bits == 32 else _MAC_PJ_HOROWITZ[bits] / _MAC_PJ_HOROWITZ[32]


def memory_energy_scale(bits: int) -> float:
    """Register, scratchpad, GLB and DRAM energy at `bits` relative to 32 bits: bits / 32.

    An access moves one element of `bits` bits. Horowitz 2014 gives memory energy per 64-bit
    access (8 KB SRAM 10 pJ, DRAM 1.3-2.6 nJ); charging it in proportion to the bits moved is
    an assumption that holds for the bit lines and I/O of a wide access and overstates the
    saving where decoders and sense amplifiers are shared. Memory energy thus shrinks as the
    bytes moved do.
    """
    return bits / 32


def at_bits(arch: Accelerator, bits: int) -> Accelerator:
    """`arch` costed for `bits`-bit data (8, 16 or 32; 32 returns `arch` itself).

    Energies per access scale by `memory_energy_scale`, the MAC by `mac_energy_scale`.
    Capacities and bandwidths stay in elements (one element per word access, no packing of
    several narrow words into one access), so the mapping and the cycles are those of 32 bits.
    """
    if bits not in WORD_BITS:
        raise CnnlabError(f"word width must be 8, 16 or 32 bits, got {bits!r}")
    if bits == 32:
        return arch
    m = memory_energy_scale(bits)
    return dataclasses.replace(
        arch, mac_pj=arch.mac_pj * mac_energy_scale(bits), reg_pj=arch.reg_pj * m, spad_pj=arch.spad_pj * m,
        glb_read_pj=arch.glb_read_pj * m, glb_write_pj=arch.glb_write_pj * m, dram_pj=arch.dram_pj * m)


@dataclass(frozen=True)
class Problem:
    """One layer as the accelerator sees it (batch 1). `kind`: conv, fc or depthwise.

    A depthwise problem has no M: weights are C x R x S and outputs C x P x Q.
    Grouped convolutions become `groups` identical problems run one after another.
    `stride` steps the window between outputs (P, Q) and `dilation` between kernel taps
    (R, S), the same on both axes, as Timeloop's Hstride/Wstride and Hdilation/Wdilation:
    the input extent of P outputs is (P-1)*stride + (R-1)*dilation + 1.
    """

    kind: str
    C: int
    M: int
    R: int = 1
    S: int = 1
    P: int = 1
    Q: int = 1
    stride: int = 1
    groups: int = 1
    dilation: int = 1

    @property
    def macs(self) -> int:
        per = self.C * self.R * self.S * self.P * self.Q * (1 if self.kind == "depthwise" else self.M)
        return per * self.groups

    def key(self) -> tuple:
        return (self.kind, self.C, self.M, self.R, self.S, self.P, self.Q, self.stride, self.groups, self.dilation)


def conv_problem(cin, cout, kh, kw, stride, out_h, out_w, groups=1, dilation=1) -> Problem:
    """The problem for a Conv2d with `groups` (depthwise when every group is one channel)."""
    c, m = cin // groups, cout // groups
    if c == 1 and m == 1:
        return Problem("depthwise", groups, groups, kh, kw, out_h, out_w, stride, 1, dilation)
    return Problem("conv", c, m, kh, kw, out_h, out_w, stride, groups, dilation)


def fc_problem(in_features, out_features, rows=1) -> Problem:
    # Extra rows (a Linear applied at several positions) run as output pixels.
    return Problem("fc", in_features, out_features, 1, 1, rows, 1, 1, 1)


@dataclass
class LayerCost:
    cycles: int
    energy_pj: float
    macs: int
    utilization: float
    breakdown: dict  # pJ per level: mac, reg, spad, glb, dram
    mapping: str  # the chosen mapping, for people who want to check it


# ---------------------------------------------------------------- the tile-delta rule

_RELEVANT = {
    "conv": {"W": "CMRS", "I": "CPQRS", "O": "MPQ"},
    "depthwise": {"W": "CRS", "I": "CPQRS", "O": "CPQ"},
}


def _tile(dt, ext, stride, kind, dilation=1):
    if dt == "W":
        return ext["C"] * ext["R"] * ext["S"] * (ext["M"] if kind == "conv" else 1)
    if dt == "O":
        return ext["P"] * ext["Q"] * (ext["M"] if kind == "conv" else ext["C"])
    # The input window of P x R (Q x S) is the bounding box of rows p*stride + r*dilation,
    # as Timeloop projects a tile (axis-aligned boxes): with dilation, skipped rows count.
    return (ext["C"] * ((ext["P"] - 1) * stride + (ext["R"] - 1) * dilation + 1)
            * ((ext["Q"] - 1) * stride + (ext["S"] - 1) * dilation + 1))


def _fills(dt, ext, loops, stride, kind, dilation=1):
    """Words a child with tile extents `ext` receives while `loops` (outer to inner, all
    above it) run: the first tile, plus at every step of the nest the part of the new tile
    that the old one did not hold. A step of loops the data does not depend on moves
    nothing; a sliding input window only brings in its new rows or columns (a step of P
    or Q moves it by `stride` rows, a step of R or S by `dilation`)."""
    rel = _RELEVANT[kind][dt]
    tile = _tile(dt, ext, stride, kind, dilation)
    total, outer = tile, 1
    for j, (d, e) in enumerate(loops):
        steps = outer * (e - 1)
        outer *= e
        inner = loops[j + 1:]
        if d not in rel and all(dd not in rel for dd, _ in inner):
            continue
        if dt != "I" or d == "C" or any(dd == "C" for dd, _ in inner):
            total += steps * tile
            continue
        shift = {}
        for axis in ("PR", "QS"):
            s = 0
            for k in range(j, len(loops)):
                dk, ek = loops[k]
                if dk not in axis:
                    continue
                step = stride if dk in "PQ" else dilation
                unit = ext[dk] * math.prod(e2 for d2, e2 in loops[k + 1:] if d2 == dk) * step
                s += unit if k == j else -unit * (ek - 1)
            shift[axis] = abs(s)
        h = (ext["P"] - 1) * stride + (ext["R"] - 1) * dilation + 1
        w = (ext["Q"] - 1) * stride + (ext["S"] - 1) * dilation + 1
        kept = ext["C"] * max(0, h - shift["PR"]) * max(0, w - shift["QS"])
        total += steps * (tile - kept)
    return total


def _spatial(p: Problem, arch: Accelerator) -> dict:
    """Spatial factors: exact divisors, as large as the array allows."""
    def fit(n, cap):
        return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)

    if p.kind == "conv" or p.kind == "fc":
        return {"C": fit(p.C, arch.pe_cols), "M": fit(p.M, arch.pe_rows)}
    # Depthwise: no M to put on the rows; they take more channels or output rows/columns.
    cx = fit(p.C, arch.pe_cols)
    best = max(((fit(p.C // cx, arch.pe_rows), "C"), (fit(p.P, arch.pe_rows), "P"), (fit(p.Q, arch.pe_rows), "Q")),
               key=lambda t: (t[0], t[1] == "C"))
    sp = {"C": cx}
    sp[best[1]] = sp.get(best[1], 1) * best[0]
    return sp


_KEEP_CHOICES = ("WIO", "WI", "WO", "IO", "W", "I", "O", "")


def _evaluate(p, arch, sp, spad_loops, upper_loops):
    """Every split of `upper_loops` (outer part at DRAM, the rest at the GLB) and every
    keep/bypass choice of the GLB: yields (cycles, energy, energy parts, split, kept data types)."""
    kind = "depthwise" if p.kind == "depthwise" else "conv"
    rel = _RELEVANT[kind]
    one = dict(C=1, M=1, R=1, S=1, P=1, Q=1)
    spad_ext = dict(one)
    for d, e in spad_loops:
        spad_ext[d] *= e
    if _tile("W", spad_ext, p.stride, kind, p.dilation) > arch.spad_words:
        return
    # What happens inside the PEs depends only on the whole loop order, not on the split.
    above_pe = upper_loops + spad_loops
    npe = math.prod(sp.values())
    T = math.prod(e for _, e in above_pe)
    w_reg = _fills("W", one, above_pe, p.stride, kind, p.dilation)
    i_reg = _fills("I", one, above_pe, p.stride, kind, p.dilation)
    o_reg = _fills("O", one, above_pe, p.stride, kind, p.dilation)
    spad_fill = _fills("W", spad_ext, upper_loops, p.stride, kind, p.dilation)
    # Data the PEs share (multicast) is sent once; partial sums are reduced on the way up.
    copies = {dt: math.prod(f for d, f in sp.items() if d in rel[dt]) for dt in "WIO"}
    to_pe = {"W": copies["W"] * spad_fill, "I": copies["I"] * i_reg}
    o_up = copies["O"] * o_reg
    n_out = _tile("O", dict(C=p.C, M=p.M, R=p.R, S=p.S, P=p.P, Q=p.Q), p.stride, kind, p.dilation)
    fixed = {
        "mac": p.macs // p.groups * arch.mac_pj,
        "reg": npe * (arch.reg_accesses_per_mac * T + w_reg + i_reg + o_reg) * arch.reg_pj,
        "spad": npe * (spad_fill + w_reg) * arch.spad_pj,
    }
    fixed_pj = sum(fixed.values())
    for split in range(len(upper_loops) + 1):
        dram_loops, glb_loops = upper_loops[:split], upper_loops[split:]
        glb_ext = dict(spad_ext)
        for d, e in glb_loops:
            glb_ext[d] *= e
        for d, f in sp.items():
            glb_ext[d] *= f
        glb_tiles = {dt: _tile(dt, glb_ext, p.stride, kind, p.dilation) for dt in "WIO"}
        glb_in = {dt: _fills(dt, glb_ext, dram_loops, p.stride, kind, p.dilation) for dt in "WIO"}
        fits_all = sum(glb_tiles.values()) <= arch.glb_words
        for keep in _KEEP_CHOICES:
            if sum(glb_tiles[dt] for dt in keep) > arch.glb_words:
                continue
            glb_r = glb_w = dram = 0
            for dt in "WI":
                if dt in keep:
                    glb_r += to_pe[dt]
                    glb_w += glb_in[dt]
                    dram += glb_in[dt]
                else:
                    dram += to_pe[dt]
            if "O" in keep:
                drained = glb_in["O"]  # output tiles the GLB hands back to DRAM
                glb_w += o_up + (drained - n_out)
                glb_r += o_up
                dram += drained + (drained - n_out)
            else:
                dram += o_up + (o_up - n_out)
            cycles = max(T, math.ceil(glb_r / arch.glb_read_words_per_cycle),
                         math.ceil(glb_w / arch.glb_write_words_per_cycle))
            if arch.dram_words_per_cycle:
                cycles = max(cycles, math.ceil(dram / arch.dram_words_per_cycle))
            glb_pj = glb_r * arch.glb_read_pj + glb_w * arch.glb_write_pj
            energy = fixed_pj + glb_pj + dram * arch.dram_pj
            yield cycles, energy, (fixed, glb_pj, dram * arch.dram_pj), split, keep
        if fits_all:
            break  # loops moved to DRAM only shrink what the GLB must hold; here it already holds it all


@lru_cache(maxsize=4096)
def _layer_cost(p: Problem, arch: Accelerator) -> LayerCost:
    sp = _spatial(p, arch)
    full = dict(C=p.C, M=p.M if p.kind != "depthwise" else 1, P=p.P, Q=p.Q)
    temporal = {d: full[d] // sp.get(d, 1) for d in full}
    movable = [d for d in "CMPQ" if temporal[d] > 1]
    best = None
    # Each loop sits at the spad or above it; R and S always at the spad, whose order is
    # fixed with P innermost, then Q, R, S (weights stay put). Loops above the spad are
    # ordered freely; an outer part of them may run at DRAM level.
    for at_spad in itertools.product((True, False), repeat=len(movable)):
        spad_dims = [d for d, s in zip(movable, at_spad) if s]
        upper = [d for d, s in zip(movable, at_spad) if not s]
        for cm in (("C", "M"), ("M", "C")):
            spad_order = [d for d in cm if d in spad_dims] + [d for d in "SRQP" if d in spad_dims or d in "RS"]
            spad_loops = [(d, temporal[d] if d in temporal else getattr(p, d)) for d in spad_order]
            spad_loops = [(d, e) for d, e in spad_loops if e > 1]
            mirror = "P" in upper and "Q" in upper and temporal["P"] == temporal["Q"] and p.R == p.S
            for order in itertools.permutations(upper):
                if mirror and order.index("Q") < order.index("P"):
                    continue  # the mirror image of an order already tried: same counts
                upper_loops = [(d, temporal[d]) for d in order]
                for cycles, energy, parts, split, kept in _evaluate(p, arch, sp, spad_loops, upper_loops):
                    if best is None or (cycles, energy) < best[:2]:
                        best = (cycles, energy, parts, spad_loops, upper_loops, split, kept)
            if "C" not in spad_dims or "M" not in spad_dims:
                break  # the C/M order at the spad only matters when both are there
    if best is None:
        raise CnnlabError(f"no mapping of layer {p} fits the accelerator: its kernel is larger than the "
                          f"{arch.spad_words}-word scratchpad; raise spad_words in the architecture file")
    cycles, energy, (fixed, glb_pj, dram_pj), spad_loops, upper_loops, split, kept = best
    parts = dict(fixed, glb=glb_pj, dram=dram_pj)
    loops = lambda ls: " ".join(f"{d}{e}" for d, e in ls)
    mapping = (f"spatial {'x'.join(f'{d}{f}' for d, f in sp.items())}; DRAM [{loops(upper_loops[:split])}] "
               f"GLB [{loops(upper_loops[split:])}] keeps {kept or 'nothing'}; spad [{loops(spad_loops)}]")
    macs = p.macs // p.groups
    return LayerCost(cycles, energy, macs, macs / (cycles * arch.pe_rows * arch.pe_cols), parts, mapping)


def layer_cost(p: Problem, arch: Accelerator = DEFAULT_ACCELERATOR) -> LayerCost:
    """Cycles and energy of one layer (all its groups, run one after another)."""
    one = _layer_cost(dataclasses.replace(p, groups=1), arch)
    g = p.groups
    return LayerCost(one.cycles * g, one.energy_pj * g, one.macs * g, one.utilization,
                     {k: v * g for k, v in one.breakdown.items()}, one.mapping + (f"; x{g} groups" if g > 1 else ""))
