"""`cnnlab train`: train a model and write a run directory."""

from __future__ import annotations

import yaml

from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.io import load_yaml
from cnnlab.commands.common import add_json_flag, print_json

# flag -> (config field, type, help). Every flag defaults to None so that only what the user
# typed overrides --config.
FLAGS = {
    "--model": ("model", str, "registered model name (see `cnnlab models`) or a spec string, e.g. "
                              "'c32k3-relu-p2-c64k3-relu-p2-fc128-relu-fc10' (default lenet5)"),
    "--dataset": ("dataset", str, "mnist, fashion-mnist, cifar10, cifar100, imagefolder:PATH or synthetic (default mnist)"),
    "--data-dir": ("data_dir", str, "folder holding <dataset>/<official files> (default $CNNLAB_DATA_DIR or ~/.cache/cnnlab/data)"),
    "--engine": ("engine", str, "torch (default) or scratch (the NumPy engine)"),
    "--backend": ("backend", str, "scratch engine kernels: numba (default) or numpy"),
    "--epochs": ("epochs", int, "number of epochs (default 5)"),
    "--batch-size": ("batch_size", int, "training batch size (default 128)"),
    "--optimizer": ("optimizer", str, "sgd, adam, ... (default adam)"),
    "--lr": ("lr", float, "learning rate (default: the optimizer's usual one)"),
    "--momentum": ("momentum", float, "SGD momentum (default 0.9)"),
    "--weight-decay": ("weight_decay", float, "L2 weight decay on weights, not biases or norms (default 0)"),
    "--schedule": ("schedule", str, "LR schedule: none, step, cosine, ... (default none)"),
    "--augment": ("augment", str, "batch augmentation, e.g. crop:4+flip+cutout:8 (default none)"),
    "--early-stop": ("early_stop", int, "stop after PATIENCE epochs without a better validation accuracy"),
    "--seed": ("seed", int, "random seed for weights, split, order and augmentation (default 0)"),
    "--device": ("device", str, "auto, cpu, cuda or cuda:N (default auto)"),
    "--subset": ("subset", int, "train on only N training images (e.g. to check that a model can overfit)"),
    "--val-size": ("val_size", int, "validation images carved from the training set (default 5000)"),
    "--loss": ("loss", str, "softmax or svm (default: the model's; a spec's last token)"),
    "--label-smoothing": ("label_smoothing", float, "label smoothing for the softmax loss (default 0)"),
    "--grad-clip": ("grad_clip", float, "clip the gradient norm to this value"),
    "--max-seconds": ("max_seconds", float, "stop once this much training time is spent (equal-time comparisons)"),
    "--ema": ("ema", float, "keep an exponential moving average of the weights with this decay (e.g. 0.999) and evaluate it"),
    "--precision": ("precision", str, "fp32 (default), bf16 (CPU or CUDA) or fp16 (CUDA)"),
    "--threads": ("threads", int, "CPU threads for PyTorch and the Numba loader (default: all cores but one, at least 1)"),
    "--save-every-steps": ("save_every_steps", int, "write checkpoints/last.pt every N steps (default: every 60 s)"),
    "--out": ("out", str, "run directory (default runs/<model>-<dataset>-<time>)"),
    "--pretrained": ("pretrained", str, "start from these weights: a cnnlab run directory or checkpoint, a PyTorch or "
                                        "safetensors state dict (torchvision and timm layouts of resnet18/34/50 and "
                                        "mobilenet_v2 too), or a URL, downloaded and cached (see docs/transfer.md)"),
    "--pretrained-hash": ("pretrained_hash", str, "expected SHA-256 of the --pretrained file, sha256:HEX (8+ hex digits; "
                                                  "or add #sha256=HEX to the source)"),
    "--freeze": ("freeze", str, "none (default: fine-tune everything) or backbone (only the new head trains; frozen "
                                "batch norms keep their statistics)"),
    "--unfreeze-epochs": ("unfreeze_epochs", int, "with --freeze backbone: thaw the backbone block by block from the "
                                                  "top, all of it after N epochs"),
    "--backbone-lr-mult": ("backbone_lr_mult", float, "the pretrained backbone's learning rate as a multiple of --lr "
                                                      "(default 1; e.g. 0.1 to fine-tune gently)"),
    "--resize": ("resize", int, "resize images to SIZExSIZE inside the model, e.g. 32 for MNIST on a CIFAR base"),
    "--input-channels": ("input_channels", int, "repeat 1-channel images to N channels inside the model, e.g. 3 for "
                                                "an RGB base (default: fold the base's first convolution instead)"),
}


def add_parser(sub):
    p = sub.add_parser("train", help="train a model; writes a run directory",
                       description="Train a model. Flags override --config, and --set overrides both. "
                                   "Interrupt with Ctrl-C and continue later with --resume RUN_DIR.")
    for flag, (field, typ, help_) in FLAGS.items():
        p.add_argument(flag, dest=field, type=typ, default=None, help=help_)
    p.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum for SGD")
    p.add_argument("--tta", action="store_true", default=None, help="evaluate with flip test-time augmentation")
    p.add_argument("--channels-last", action="store_true", default=None, help="NHWC memory layout")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--sync-bn", dest="sync_bn", action="store_true", default=None,
                   help="with several processes: batch-norm statistics over the whole global batch")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train with N processes on this machine (torchrun, DistributedDataParallel; one GPU each on "
                        "CUDA, Gloo on CPUs); --batch-size stays the global batch (see docs/scaling.md)")
    p.add_argument("--deterministic", action="store_true", default=None,
                   help="deterministic algorithms only: same-seed runs and resumed runs are bitwise equal on CUDA "
                        "too (slower on CUDA; CPU runs are exact without it)")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="also log scalars, the first layer's filters and the graph to RUN_DIR/tensorboard/ "
                        "(needs pip install 'cnnlab[tensorboard]'; view with: tensorboard --logdir runs)")
    p.add_argument("--config", metavar="FILE", help="a YAML file of TrainConfig keys (e.g. a run's config.yaml)")
    p.add_argument("--recipe", metavar="NAME", help="start from a ready config: fast, fast-cpu, fast96 "
                                                   "(`cnnlab recipes` lists them with their measured figures)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override any config key, values in YAML: --set schedule_args='{step_epochs: 2}'")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run exactly where it stopped "
                   "(with --lr or --grad-clip: from there with that value, e.g. after the loss became NaN)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no epoch table on stdout")
    add_json_flag(p)
    p.set_defaults(func=run)


def config_from_args(args) -> TrainConfig:
    if args.config and args.recipe:
        raise CnnlabError("give --config or --recipe, not both (a recipe is a config file: copy it with "
                          "`cnnlab recipes NAME --show > my.yaml` and change it)")
    config = TrainConfig.load(args.config) if args.config else TrainConfig()
    if args.recipe:
        from cnnlab.recipes import load_recipe, recipe_path

        config.update(load_recipe(args.recipe), where=str(recipe_path(args.recipe)))
    given = {}
    for field, _, _ in FLAGS.values():
        if getattr(args, field) is not None:
            given[field] = getattr(args, field)
    for flag in ("nesterov", "tta", "channels_last", "compile", "deterministic", "sync_bn", "tensorboard"):
        if getattr(args, flag):
            given[flag] = True
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq:
            raise CnnlabError(f"bad --set '{item}': write KEY=VALUE")
        try:
            given[key.strip()] = load_yaml(value)
        except yaml.YAMLError:
            raise CnnlabError(f"bad --set '{item}': the value is not valid YAML") from None
    if args.config and args.out is None and not any(s.startswith("out=") for s in args.set):
        given["out"] = None  # a run's own config.yaml must not send a new run into the old directory
    return config.update(given, where="--set/--config")  # each value's type checked once, where it came from


def resume_overrides(args) -> dict:
    """What a --resume changes (--lr, --grad-clip); any other flag is refused."""
    may_change = {"--lr", "--grad-clip"}
    given = [f for f in FLAGS if getattr(args, FLAGS[f][0]) is not None and f not in may_change]
    given += [f"--{f.replace('_', '-')}" for f in ("nesterov", "tta", "channels_last", "compile", "deterministic",
                                                     "sync_bn", "tensorboard")
              if getattr(args, f)] + (["--config"] if args.config else []) + (["--recipe"] if args.recipe else [])
    if given or args.set:
        raise CnnlabError(f"--resume continues a run with its own config (only --lr and --grad-clip may change); "
                          f"drop {', '.join(given) or '--set'}")
    return {FLAGS[f][0]: getattr(args, FLAGS[f][0]) for f in may_change if getattr(args, FLAGS[f][0]) is not None}


def checked_config(args) -> TrainConfig:
    """The config `cnnlab train ARGS` would train (a resumed run's own, with its new --lr or
    --grad-clip), validated as the trainer validates it before any data is read; nothing is
    trained or written. For `--nproc` and `cnnlab cluster`, which check before they start anything."""
    from cnnlab.train.validate import validate

    if args.resume:
        from cnnlab.dirs import RunDir

        overrides = resume_overrides(args)
        run = RunDir(args.resume).check()
        config = TrainConfig.load(run.config).update(overrides, where="--resume")
        return validate(config, new_run=False)
    return validate(config_from_args(args))


def run(args) -> int:
    from cnnlab.train.launch import follow_launcher
    from cnnlab.train.loop import train

    follow_launcher()  # a process of `--nproc` ends with its launcher
    if args.nproc is not None:
        from cnnlab.train.launch import launch

        return launch(args.nproc, _argv_without_nproc(args.argv), checked_config(args), resume=args.resume)

    if args.resume:
        summary = train(None, resume=args.resume, quiet=args.quiet or args.json, overrides=resume_overrides(args))
    else:
        summary = train(config_from_args(args), quiet=args.quiet or args.json)
    if args.json:
        print_json(summary)
    return 0


def _argv_without_nproc(argv) -> list[str]:
    """This command's arguments as typed, less --nproc: what each process runs."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        out.append(a)
    return out
