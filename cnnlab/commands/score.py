"""`cnnlab score`: the class competition's score of a trained run (writes RUN_DIR/score.json).

    cnnlab score runs/x                          # evaluates the test split, costs the model, prints the points
    cnnlab score runs/x --max-activation 512KiB --json
    cnnlab score runs/x --bits 8                 # int8: 1 B/element for the activation rule, 8-bit energy

The work is `cnnlab.workflows.measure.score`.
"""

from __future__ import annotations

from cnnlab.commands.common import add_json_flag, print_json
from cnnlab.commands.cost import add_bits_option


def add_parser(sub):
    p = sub.add_parser("score", help="competition score of a run: error, energy, cycles, peak activation, points",
                       description="Score a trained run as the CIFAR-10 class competition does: test error, "
                                   "accelerator energy and cycles, peak activation (hard limit 1 MB), the metric "
                                   "error%%/12 + cycles/300000 and rubric points. Writes RUN_DIR/score.json.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `cnnlab train`")
    p.add_argument("--max-activation", default="1MB", help="peak activation limit (default 1MB = 1,000,000 bytes)")
    p.add_argument("--arch", metavar="FILE.yaml", help="accelerator architecture (default: the competition's)")
    add_bits_option(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from cnnlab.cost.accelerator import DEFAULT_ACCELERATOR, Accelerator
    from cnnlab.commands.common import parse_bytes
    from cnnlab.workflows.measure.score import score_run

    arch = Accelerator.load(args.arch) if args.arch else DEFAULT_ACCELERATOR
    from cnnlab.dirs import RunDir

    result = score_run(args.run_dir, arch, parse_bytes(args.max_activation), write=False, bits=args.bits)
    if args.json:
        print_json(result)
    else:
        print(format_score(result), flush=True)
    RunDir(args.run_dir).write_score(result)  # after printing: a read-only run still shows its score
    return 0


def format_score(s: dict) -> str:
    pts = s["points_by_part"]
    lines = [
        f"run              {s['run_dir']} ({s['model']} on {s['dataset']})",
        f"test error       {s['error_percent']:.2f}%  (accuracy {100 * s['test_accuracy']:.2f}%, {s['accuracy_source']})"
        f"  -> {pts['error']} points",
        f"energy           {s['energy_mj']:.4f} mJ  -> {pts['energy']} points",
        f"latency          {s['cycles']:,} cycles  -> {pts['latency']} points",
        f"peak activation  {s['peak_activation_bytes']:,} bytes at {s['peak_activation_layer']} "
        f"(limit {s['max_activation_bytes']:,}, {s.get('bits', 32)}-bit words)",
        f"metric           {s['metric']:.4f}  (error%/12 + cycles/300000, lower is better)",
    ]
    if s["hard_constraints_failed"]:
        lines.append(f"points           0  (hard constraint failed: {'; '.join(s['hard_constraints_failed'])})")
    else:
        lines.append(f"points           {s['points']}  (of 120)")
    if s.get("note"):
        lines.append(f"note             {s['note']}")
    return "\n".join(lines)
