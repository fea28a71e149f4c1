"""`cnnlab env`: the machine cnnlab runs on."""

from cnnlab.commands.common import add_json_flag, print_json


def add_parser(sub):
    p = sub.add_parser("env", help="show CPU, memory, GPUs and library versions")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from cnnlab.envinfo import environment

    env = environment()
    if args.json:
        print_json(env)
        return 0
    gpus = "; ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in env["gpus"]) or "none"
    mhz = f" at {env['cpu_mhz']:.0f} MHz" if env["cpu_mhz"] else ""
    print(f"CPU      {env['cpu_model']}, {env['cpu_cores']} cores{mhz}")
    print(f"memory   {env['memory_gib']} GiB")
    print(f"GPUs     {env['gpu_count']}: {gpus}")
    print(f"torch    {env['torch']} (CUDA {env['cuda'] or 'none'}, {env['torch_threads']} CPU threads)")
    print(f"python   {env['python']}, numpy {env['numpy']}, {env['platform']}")
    return 0
