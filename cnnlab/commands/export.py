"""`cnnlab export RUN_DIR --format FORMAT`: the model in a file to share or deploy.

Every file records its source run, cnnlab version, input shape and layout, classes, mean/std and
whether normalisation is baked in (--bake-normalization: the model then takes pixel values 0-255),
so `cnnlab predict FILE` and `cnnlab bench FILE` need no run directory. Before writing, the file is
read back and run on real test images against the PyTorch model (safetensors: bitwise equal; the
others within 1e-4); a file that fails is not written.

The formats, `--format`'s choices and their descriptions in `--help` come from the registry of
cnnlab.workflows.export (which imports without torch, so the CLI starts fast).
"""

from __future__ import annotations

import argparse
import textwrap

from cnnlab.commands.common import add_json_flag, print_json


def formats_help() -> str:
    """The registered formats, one entry each, for `cnnlab export --help`."""
    from cnnlab.workflows.export import FORMATS

    lines = ["Formats (default file RUN_DIR/exports/model.<ext>; --checkpoint last writes model-last.<ext>):"]
    for fmt in FORMATS.values():
        lines += textwrap.wrap(fmt.help, 106, initial_indent=f"  {fmt.name:<14}", subsequent_indent=" " * 16)
    return "\n".join(lines)


def add_parser(sub):
    from cnnlab.workflows.export import DEFAULT_OPSET, EXPORTERS, FORMATS
    from cnnlab.workflows.export.quantize import DEFAULT_CALIBRATION_IMAGES, DEFAULT_MAX_CLASS_DROP

    p = sub.add_parser("export", help=f"export a trained model: {', '.join(FORMATS)}",
                       description=formats_help() + "\n\n" + __doc__.split("\n\n")[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `cnnlab train` (either engine)")
    p.add_argument("--format", dest="fmt", required=True, choices=list(FORMATS))
    p.add_argument("--out", metavar="PATH", help="the file to write, or a folder for the default name "
                                                 "(default RUN_DIR/exports/model.<ext>)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which weights (default best)")
    (ts_lo, ts_hi), (dy_lo, dy_hi) = EXPORTERS["torchscript"], EXPORTERS["dynamo"]
    p.add_argument("--opset", type=int, help=f"ONNX opset (default {DEFAULT_OPSET}; {ts_lo}-{ts_hi} with the default "
                                             "exporter)")
    p.add_argument("--exporter", choices=list(EXPORTERS), default="torchscript",
                   help=f"ONNX: torch.onnx's TorchScript-based exporter (default; any opset {ts_lo}-{ts_hi}, fast) or "
                        f"the torch.export-based one (opset {dy_lo}-{dy_hi})")
    p.add_argument("--bake-normalization", action="store_true",
                   help="put the dataset's normalisation into the model: it then takes pixel values 0-255")
    p.add_argument("--check-images", type=int, default=16, metavar="N",
                   help="test images the check runs (default 16)")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="write without running the file against PyTorch first")
    p.add_argument("--int8", action="store_true",
                   help=f"quantize to int8 after training images (--format {', '.join(f.name for f in FORMATS.values() if f.quantize)}), "
                        "checked against float32 on the whole test split; default file model-int8.<ext>")
    p.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES, metavar="N",
                   help=f"--int8: training images that set the activation ranges (default {DEFAULT_CALIBRATION_IMAGES})")
    p.add_argument("--max-class-drop", type=float, default=DEFAULT_MAX_CLASS_DROP, metavar="POINTS",
                   help="--int8: refuse the file when a class loses more test accuracy than this, in points "
                        f"(default {DEFAULT_MAX_CLASS_DROP:g})")
    p.add_argument("--data-dir", help="where the dataset is, if not where the run found it")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from cnnlab.workflows.export import export_run

    info = export_run(args.run_dir, args.fmt, args.out, args.checkpoint, args.opset, args.bake_normalization,
                      args.exporter, args.check, args.check_images, args.data_dir, args.int8, args.calibration_images,
                      args.max_class_drop)
    if args.json:
        print_json(info)
        return 0
    size = info["bytes"]
    size = f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"
    extra = f", opset {info['opset']}" if "opset" in info else ""
    print(f"wrote {info['path']} ({info['format']}{extra}, {size}) from {info['source_run']} ({info['checkpoint']} "
          f"checkpoint)")
    shape = "x".join(map(str, info["input_shape"]))
    print(f"input: batch x {shape} ({info['layout']}), {info['input']}")
    chk = info.get("check")
    q = info.get("quantization")
    if q:
        cal = q["calibration"]
        print(f"int8 ({q['tool']}), calibrated on {cal['images']} training images (seed {cal['seed']})")
        if chk:
            print(f"checked on {chk['runtime']} on all {chk['images']} test images: float32 {100 * chk['fp32_acc']:.2f}%, "
                  f"int8 {100 * chk['int8_acc']:.2f}%, {100 * chk['agreement']:.2f}% same predictions; largest class "
                  f"drop {chk['max_class_drop_points']:.2f} points (class '{chk['worst_class']}', allowed "
                  f"{chk['max_class_drop_allowed']:g})")
        else:
            print("not checked (--no-check): its accuracy is unknown")
    elif chk:
        how = "bitwise equal" if chk["bitwise_equal"] else f"max abs difference {chk['max_abs_diff']:.2g}"
        print(f"checked on {chk['runtime']} against PyTorch on {chk['source']}: {how}, "
              f"{chk['same_predictions']}/{chk['images']} same predictions")
    return 0
