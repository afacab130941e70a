"""`sqlft train` (and `make train`): the recipe on this machine, under the same supervisor as a Slurm node.

    sqlft train                                                    # configs/demo.yaml, one process
    sqlft train --config configs/X.yaml --lora.r 64                # any config key as --section.key VALUE
    sqlft train --accelerate-config accelerate_configs/cpu_ddp.yaml [--num-processes N]

One process without an accelerate config runs `python -m ft.train` directly; anything else runs
`accelerate launch ... -m ft.train`. The exit code is the trainer's: 0 finished, 75 stopped on a signal after
checkpointing (run the same command to continue), 2 config or data error, 1 anything else (130: killed by a second
Ctrl-C). What plain `accelerate launch` gets wrong, and this fixes:
- its exit code is 1 whatever the trainer's was: here the trainer's status files (SQLFT_STATUS_DIR) decide;
- a SIGTERM to the process group (`kill -TERM -PGID`, a scheduler) kills the launcher at once and leaves the
  trainer alone: here the launcher runs in a session of its own, with the stop signals blocked, and the supervisor
  passes the signal to the training processes, which checkpoint and exit 75 (they inherit the blocked signals
  and unblock them once their handlers are in: a signal while they import is not lost);
- Ctrl-C ends in KeyboardInterrupt tracebacks and no checkpoint: here the first one makes every process finish
  its step and checkpoint (one line says so), a second one kills them at once;
- a failing process's clean `error:` line is followed by accelerate's CalledProcessError / ChildFailedError
  traceback: here the launcher exits with the process's code, silently.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from ft.cli import TIME_BUDGET, Command, run
from ft.config import Config, default_output_dir
from launch.plan import LAUNCHER_SIGNALS, SubmitError, accelerate_args, read_accelerate_config
from launch.slurm import accelerate_distributed_type
from launch.supervisor import EXIT_KILLED, AdapterWatch, Launcher, supervise

# `accelerate launch`, run as the launcher process (it imports torch there; this module doesn't). accelerate re-raises
# a failed worker as CalledProcessError (one process) or torchrun's ChildFailedError (several): a traceback and a
# failure report after the worker has printed its own error, and exit code 1 whatever the worker's was. This exits
# with the (first failed) worker's code instead, silently; any other exception keeps its traceback.
QUIET_ACCELERATE = """\
import subprocess, sys
from accelerate.commands.launch import launch_command, launch_command_parser
sys.argv[0] = "accelerate launch"
try:
    launch_command(launch_command_parser().parse_args())
except subprocess.CalledProcessError as e:
    sys.exit(e.returncode if e.returncode > 0 else 128 - e.returncode)
except Exception as e:
    if not hasattr(e, "get_first_failure"):
        raise
    code = e.get_first_failure()[1].exitcode
    sys.exit(code if code > 0 else 128 - code)
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--accelerate-config", metavar="FILE",
                   help="accelerate config (accelerate_configs/*.yaml: DDP, ZeRO-2/3, their cpu_ rehearsals)")
    p.add_argument("--num-processes", type=int, metavar="N",
                   help="training processes on this machine [the accelerate config's num_processes, else 1]")


COMMAND = Command(
    name="train",
    description="Fine-tune on this machine (the recipe in ft/train.py, under accelerate for several processes). "
                "Exit code: 0 finished, 75 stopped on a signal after checkpointing (run the same command to "
                "continue), 2 config or data error, 1 otherwise.",
    add_arguments=add_arguments,
    aliases=[TIME_BUDGET],
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trainer_args(args: argparse.Namespace) -> list[str]:
    """The recipe's own arguments: --config (when given) and the overrides, as the user wrote them."""
    out = ["--config", args.config] if args.config else []
    return out + [a for key, value in args.overrides.items() for a in (f"--{key}", str(value))]


def build_command(args: argparse.Namespace, python: str = sys.executable) -> tuple[list[str], int]:
    """(the command, how many training processes it starts)."""
    accel = read_accelerate_config(args.accelerate_config) if args.accelerate_config else None
    procs = args.num_processes
    if procs is None:
        procs = int(accel.get("num_processes") or 1) if accel else 1
    if procs < 1:
        raise SubmitError("--num-processes must be >= 1.")
    if accel is None and procs == 1:  # nothing for accelerate to do: one process fewer, and no launcher traceback
        return [python, "-m", "ft.train", *trainer_args(args)], 1
    dist = accelerate_distributed_type(args.accelerate_config, 1, accel) if accel else None
    config_file = str(Path(args.accelerate_config).resolve()) if accel else None
    flags = accelerate_args(procs, 1, config_file=config_file, distributed=dist, port=_free_port())
    return [python, "-c", QUIET_ACCELERATE, *flags, "-m", "ft.train", *trainer_args(args)], procs


def train(cfg: Config, args: argparse.Namespace) -> int:
    cmd, procs = build_command(args)
    env = os.environ | LAUNCHER_SIGNALS | {"PYTHONUNBUFFERED": "1"}
    output_dir = cfg.train.output_dir if cfg.train.output_dir != "auto" else default_output_dir(cfg)
    launcher = Launcher(cmd, env, os.getcwd(), [1], [2], is_trainer=cmd[1:3] == ["-m", "ft.train"])
    # (a new line first: the trainer's progress bar has none)
    outcome = supervise([launcher], log=lambda m: print("\n" + m, file=sys.stderr, flush=True),
                        finished=AdapterWatch(output_dir))
    code = 0 if outcome.ok else outcome.exit_code(procs)
    if code == 1 and not outcome.killed and not any(s.get("reported") for s in outcome.statuses.values()):
        why = next((s["message"] for s in outcome.statuses.values() if s.get("message")), None)
        print(f"error: training failed{': ' + why if why else ''} (exit codes {outcome.returncodes})",
              file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        return run(COMMAND, train, argv, errors=(SubmitError,))
    except KeyboardInterrupt:  # Ctrl-C before the training processes started: nothing to save
        print("[sqlft] interrupted before training started", file=sys.stderr)
        return EXIT_KILLED


if __name__ == "__main__":
    sys.exit(main())
