"""A model's full cost: the per-layer table, totals, peak activation and accelerator figures.

    report = analyze(create_model("lenet5", 10, 3, 32), (3, 32, 32))
    report.totals["macs"], report.peak_activation, report.totals["cycles"]
    print(format_table(report))
    int8 = analyze(model, (3, 32, 32), bits=8)   # 1 B/element; memory and MAC energy at 8 bits

`bits` (8, 16 or 32, default 32) is the word width of activations and weights. At 32 every
figure is the fp32 one (4 B/element). At 8 or 16, activation and weight bytes (the rule's
peak, the per-layer in/out/weight/act columns, total weight bytes) are the 32-bit figures
times bits/32, and energy is costed on `accelerator.at_bits(arch, bits)`; cycles are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from cnnlab.cost.accelerator import DEFAULT_ACCELERATOR, WORD_BITS, Accelerator, at_bits, layer_cost
from cnnlab.cost.trace import _numel, as_torch_model, trace
from cnnlab.errors import CnnlabError
from cnnlab.text import format_table as format_text_table

# The competition's activation rule (4 bytes per element at 32 bits, leaf modules only).
_ACT_INPUT_ONLY = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm,
                   nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Sigmoid, nn.Tanh)
DEFAULT_MAX_ACTIVATION = 1_000_000  # "1 MB" read as SI megabytes; pass 1MiB for 1,048,576


def rule_activation_bytes(row, bits: int = 32) -> int:
    """Bytes the competition charges a leaf module (0 for functional operations) at `bits`-bit elements."""
    m = row.module
    if m is None:
        return 0
    n_in, n_out = _numel(row.in_shape), _numel(row.out_shape)
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        own = (n_in + n_out // m.groups) * 4
    elif isinstance(m, nn.Linear):
        own = (n_in + n_out) * 4
    elif isinstance(m, _ACT_INPUT_ONLY):
        own = n_in * 4
    else:
        own = 0
    return (own + row.residual_input_bytes) * bits // 32  # both are 4 B/element figures


@dataclass
class CostReport:
    model_name: str
    in_shape: tuple
    rows: list  # trace rows with .cycles, .energy_pj, .activation_bytes added
    totals: dict
    peak_activation: int  # bytes, by the competition rule
    peak_layer: str
    peak_live_bytes: int  # measured live-tensor peak of the forward pass
    uncounted: list
    arch: Accelerator
    backend: str
    max_activation: int = DEFAULT_MAX_ACTIVATION
    notes: list = field(default_factory=list)
    bits: int = 32  # word width of activations and weights

    @property
    def activation_ok(self) -> bool:
        return self.peak_activation < self.max_activation

    def to_dict(self) -> dict:
        return {
            "model": self.model_name,
            "input": list(self.in_shape),
            "backend": self.backend,
            "architecture": self.arch.name,
            "bits": self.bits,
            "totals": self.totals,
            "peak_activation_bytes": self.peak_activation,
            "peak_activation_layer": self.peak_layer,
            "max_activation_bytes": self.max_activation,
            "activation_ok": self.activation_ok,
            "peak_live_tensor_bytes": self.peak_live_bytes,
            "uncounted_ops": [{"op": op, "where": where} for op, where in self.uncounted],
            "layers": [
                {"name": r.name, "type": r.type, "input": list(r.in_shape), "output": list(r.out_shape),
                 "params": r.params, "macs": r.macs, "flops": r.flops, "input_bytes": r.in_bytes,
                 "output_bytes": r.out_bytes, "weight_bytes": r.weight_bytes,
                 "activation_bytes": r.activation_bytes, "cycles": r.cycles, "energy_pj": r.energy_pj}
                for r in self.rows
            ],
        }


def analyze(model, in_shape, arch: Accelerator = DEFAULT_ACCELERATOR, backend: str = "analytic",
            max_activation: int = DEFAULT_MAX_ACTIVATION, name: str | None = None, bits: int = 32) -> CostReport:
    """Trace `model` on one (1, *in_shape) input and cost every layer on `arch` at `bits`-bit words."""
    model = as_torch_model(model)
    if bits not in WORD_BITS:
        raise CnnlabError(f"bits must be 8, 16 or 32, got {bits!r}")
    if bits != 32 and backend != "analytic":
        raise CnnlabError(f"the {backend} backend costs 32-bit figures only: leave bits at 32 or use the analytic backend")
    cost_arch = at_bits(arch, bits)
    if backend == "analytic":
        cost_fn = layer_cost
    elif backend == "timeloop":
        from cnnlab.cost.timeloop import timeloop_layer_cost as cost_fn  # raises a clear error when absent
    else:
        raise CnnlabError(f"unknown cost backend '{backend}': use analytic or timeloop")
    t = trace(model, tuple(in_shape))
    uncounted = list(t.uncounted)
    peak, peak_layer = 0, "-"
    for r in t.rows:
        r.cycles, r.energy_pj = 0, 0.0
        for p in r.problems:
            if p.dilation != 1 and backend != "analytic":
                # timeloop.py writes its problems without dilation: listed, never costed as undilated
                uncounted.append((f"aten.convolution (dilation {p.dilation}: the {backend} backend does not "
                                  f"model dilation, 0 cycles and energy)", r.name))
                continue
            c = cost_fn(p, cost_arch)
            r.cycles += c.cycles
            r.energy_pj += c.energy_pj
        r.activation_bytes = rule_activation_bytes(r, bits)
        if bits != 32:  # the traced bytes are fp32 (4 B/element) as stored
            r.in_bytes, r.out_bytes = r.in_bytes * bits // 32, r.out_bytes * bits // 32
            r.weight_bytes = r.weight_bytes * bits // 32
        if r.activation_bytes > peak:
            peak, peak_layer = r.activation_bytes, r.name
    totals = {
        "params": t.params,
        "macs": sum(r.macs for r in t.rows),
        "flops": sum(r.flops for r in t.rows),
        "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters()) * bits // 32,
        "cycles": sum(r.cycles for r in t.rows),
        "energy_pj": sum(r.energy_pj for r in t.rows),
    }
    totals["energy_mj"] = totals["energy_pj"] * 1e-9
    totals["latency_ms_at_clock"] = totals["cycles"] / (arch.clock_mhz * 1e3)
    return CostReport(name or getattr(model, "model_name", type(model).__name__), tuple(in_shape), t.rows, totals,
                      peak, peak_layer, t.peak_live_bytes, uncounted, arch, backend, max_activation, bits=bits)


# ---------------------------------------------------------------- the table

def _shape(s):
    return "x".join(str(v) for v in s[1:]) if len(s) > 1 else "x".join(str(v) for v in s)


def _si(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.2f}"


def format_table(rep: CostReport) -> str:
    head = ("layer", "type", "input", "output", "params", "MACs", "FLOPs", "in B", "out B", "weight B",
            "act B (rule)", "cycles", "energy uJ")
    lines = []
    for r in rep.rows:
        lines.append((r.name, r.type, _shape(r.in_shape), _shape(r.out_shape), _si(r.params), _si(r.macs),
                      _si(r.flops), _si(r.in_bytes), _si(r.out_bytes), _si(r.weight_bytes), _si(r.activation_bytes),
                      _si(r.cycles), f"{r.energy_pj / 1e6:.3f}"))
    t = rep.totals
    lines.append(("total", "", _shape((1, *rep.in_shape)), "", _si(t["params"]), _si(t["macs"]), _si(t["flops"]),
                  "", "", _si(t["weight_bytes"]), _si(rep.peak_activation), _si(t["cycles"]), f"{t['energy_pj'] / 1e6:.3f}"))
    out = [f"word width {rep.bits} bits ({rep.bits // 8} B/element for activations and weights)",
           format_text_table(head, lines, align="l" * 4 + "r" * (len(head) - 4), rules=[len(lines) - 1]), ""]
    verdict = "PASS" if rep.activation_ok else "FAIL"
    out += [
        f"model            {rep.model_name} on 1x{_shape((1, *rep.in_shape))}",
        f"parameters       {t['params']:,}",
        f"MACs             {t['macs']:,}  (multiply-accumulates)",
        f"FLOPs            {t['flops']:,}  (2 per MAC + element-wise, norm and pooling work)",
        f"peak activation  {rep.peak_activation:,} bytes at {rep.peak_layer} (competition rule, {rep.bits // 8} B/element): "
        f"{verdict} against the limit of {rep.max_activation:,} bytes",
        f"live tensors     {rep.peak_live_bytes:,} bytes at peak (measured, batch 1)",
        f"accelerator      {rep.arch.name} ({rep.backend}): {t['cycles']:,} cycles, "
        f"{t['energy_pj'] / 1e9:.4f} mJ ({t['energy_pj'] / 1e6:.2f} uJ)",
    ]
    if rep.uncounted:
        ops = sorted({f"{op} (in {where})" for op, where in rep.uncounted})
        out.append(f"NOT COUNTED      {len(rep.uncounted)} operation(s) with no cost rule (or, where noted, "
                   f"no accelerator rule): {', '.join(ops)}")
    else:
        out.append("not counted      none: every operation has a cost rule")
    return "\n".join(out)
