"""Command line shared by train_lcd.py, train_lcf.py and ``lcm-distill-train`` (any objective.kind):
--config FILE [--set k=v ...] [--dry-run] [--resume]."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..config import ConfigError, load_config


def build_parser(prog: str, kind: str | None = None) -> argparse.ArgumentParser:
    """The flags of train_lcd.py / train_lcf.py (``kind``: lcd | lcf) and lcm-distill-train (kind None: any)."""
    what = f"{kind.upper()} training" if kind else "Training with the config's objective.kind"
    p = argparse.ArgumentParser(prog=prog, description=f"{what} (lcm-distill).")
    p.add_argument("--config", required=True, help="YAML file (see configs/).")
    p.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override keys, YAML-parsed values; one or more per --set, repeatable, e.g. "
        "--set train.max_train_steps=10 train.seed=1",
    )
    p.add_argument("--dry-run", action="store_true",
                   help="check everything that needs no weights (paths, columns, output folder, resume), print the "
                   "resolved config and exit")  # fmt: skip
    plan = p.add_argument_group("memory plan (printed by --dry-run; lcm_distill/engine/memory.py)")
    plan.add_argument("--gpu-gb", type=float, default=80.0, metavar="GB",
                      help="GiB of one GPU to check the plan against (default 80; an '80 GB' H100 has 79.6 GiB; "
                      "0: print the estimate only)")
    plan.add_argument("--num-processes", type=int, default=None, metavar="N",
                      help="training processes (GPUs) in all; default: $WORLD_SIZE, else 1")
    plan.add_argument("--engine", choices=["ddp", "fsdp2", "zero2"], default=None,
                      help="plan for this engine (default: train.distributed; auto plans DDP): fsdp2 shards weights, "
                      "gradients, AdamW states and the EMA target; zero2 gradients and AdamW states")  # fmt: skip
    plan.add_argument("--zero2", action="store_true",
                      help="plan for DeepSpeed ZeRO-2 (configs/accelerate/deepspeed_zero2.yaml): gradients and "
                      "optimiser states sharded over the processes")  # fmt: skip
    p.add_argument(
        "--resume",
        default=None,
        metavar="latest|PATH",
        help="continue from the newest intact checkpoint in train.output_dir, or from a checkpoint folder",
    )
    p.add_argument("--overwrite", action="store_true",
                   help="delete the checkpoints of an earlier run in train.output_dir (a new run refuses them)")
    return p


def parse_run(argv: list[str], kind: str | None, prog: str):
    """(args, Config) of a command line, without the path checks of --dry-run (benchmarks validate the argv of
    steps whose inputs an earlier step writes). Raises ConfigError for a bad config or the wrong objective.kind."""
    args = build_parser(prog, kind).parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if kind is not None and cfg.objective.kind != kind:
        raise ConfigError(f"objective.kind={cfg.objective.kind!r}; {prog} trains {kind!r}")
    return args, cfg


def memory_plan(cfg, args: argparse.Namespace) -> str:
    """The --dry-run memory plan as '# ' comment lines (the resolved YAML above it stays loadable)."""
    from ..engine.memory import estimate

    processes = int(os.environ.get("WORLD_SIZE", "1")) if args.num_processes is None else args.num_processes
    if processes < 1:
        raise ConfigError(f"--num-processes={processes}: must be at least 1.")
    if args.zero2 and processes == 1:
        print("warning: --zero2 with one process shards nothing; pass --num-processes", file=sys.stderr)
    try:
        engine = "zero2" if args.zero2 else (args.engine or cfg.train.distributed)
        engine = "ddp" if engine == "auto" else engine
        plan = estimate(cfg, processes=processes, engine=engine, device_gib=args.gpu_gb or None)
    except FileNotFoundError as err:
        return f"# memory plan: not available ({err})"
    return "\n".join(f"# {line}" for line in plan.render().splitlines())


def main(argv: list[str] | None = None, kind: str | None = None, prog: str = "lcm-distill-train") -> int:
    args = build_parser(prog, kind).parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"{prog}: config error: {err}", file=sys.stderr)
        return 2
    if kind is not None and cfg.objective.kind != kind:
        print(f"{prog}: objective.kind={cfg.objective.kind!r} in {args.config}; this script trains {kind!r}. "
              f"Use train_{cfg.objective.kind}.py or set objective.kind={kind}.", file=sys.stderr)  # fmt: skip
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..engine import CheckpointError, DataError, NonFiniteLossError, preflight, train

    try:
        if args.dry_run:
            memory = memory_plan(cfg, args)
            try:
                plan = preflight(cfg, args.resume, args.overwrite, dry_run=True)
            except ConfigError:
                print(memory)  # the plan needs only the network configs, so it is shown even when a check fails
                raise
            print(cfg.to_yaml(), end="")
            print(f"# dry run: checks passed; engine {plan.engine.name} ({plan.engine.source}); "
                  f"resume from {plan.checkpoint or 'nothing (a new run)'}"
                  + "".join(f"\n# {note}" for note in plan.notes))  # fmt: skip
            print(memory)
            return 0
        result = train(cfg, resume=args.resume, overwrite=args.overwrite)
    except ConfigError as err:  # every up-front check (engine/preflight.py) names the key or file at fault
        print(f"{prog}: config error: {err}", file=sys.stderr)
        return 2
    except (CheckpointError, DataError, NonFiniteLossError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    if result.is_main_process:
        print(f"{result.status} at step {result.step}; output in {result.output_dir}; "
              f"last checkpoint {result.last_checkpoint}; skipped samples {result.skipped_samples}; "
              f"non-finite steps {result.nonfinite_total}")  # fmt: skip
        counts = {k: v for k, v in result.data.items() if k != "lost_shards" and v}
        if counts:
            print("data: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        for lost in result.data.get("lost_shards", []):
            print(f"warning: shard lost (read error; the rest of it was not trained on): {lost}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], kind=None, prog="lcm-distill-train"))
