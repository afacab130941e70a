"""`sqlft submit` (= `python launch/submit.py`): a training run (or a sweep) on Slurm through submitit, one task per
node, each running `accelerate launch`.

    python launch/submit.py --nodes 2 --gpus-per-node 8 --config configs/llama3.1-8b.yaml \
        --accelerate-config accelerate_configs/zero2.yaml --partition gpu --time 24:00:00 [--lora.r 64 ...]
    python launch/submit.py ... --sweep lora.r=16,64,128 train.learning_rate=2e-5,1e-4   # a job array
    python launch/submit.py ... --dry-run      # print the sbatch script and the per-node commands
    python launch/submit.py ... --local        # the same commands on this machine, no Slurm

Everything of a run lands under `<output-root>/<run-name>/`: checkpoints, adapter, metrics (the trainer's
`--train.output_dir`), `submitit/` (sbatch script, stdout / stderr per node), `command.txt` and `job.json`.

This file is the command: its options, the checks in order, and what it prints. The pieces live by where they run:
launch/plan.py (pure planning: run specs, per-node commands, sweeps, sbatch parameters), launch/slurm.py (asking
Slurm, pre-flight checks, submitting, waiting) and launch/supervisor.py (the node side that submitit runs: signals,
status files, requeue). How a job runs is told in slurm/README.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import socket
import sys
from pathlib import Path

from ft.cli import Command, parse
from ft.config import Config, ConfigError, default_output_dir, load_config
from ft.constants import EXIT_PREEMPTED, EXIT_USAGE
from launch import slurm
from launch.plan import (
    PORT_NOTE,
    Plan,
    RunSpec,
    SubmitError,
    budget_from_time_limit,
    combo_slug,
    describe_nodes,
    expand_sweep,
    launcher_command,
    launcher_env,
    parse_mem_mb,
    parse_signal,
    parse_time_minutes,
    read_accelerate_config,
    resolve_gpus,
    sbatch_params,
    sbatch_script,
)
from launch.supervisor import EXIT_KILLED, AdapterWatch, Launcher, NodeTask, run_summary, supervise


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=None,
                   help="GPUs (= training processes) per node [from --accelerate-config's num_processes for a GPU "
                        "config; 0 for a recipe that runs on CPUs; a GPU recipe without GPUs is an error]")
    p.add_argument("--cpu", action="store_true",
                   help="CPU rehearsal: no GPUs, 1 process per node over gloo (also of a GPU recipe)")
    p.add_argument("--accelerate-config", help="accelerate config file (accelerate_configs/*.yaml); its topology "
                                               "(processes, machines, rank, address) is replaced per node")
    g = p.add_argument_group("Slurm resources")
    g.add_argument("--partition")
    g.add_argument("--account")
    g.add_argument("--qos")
    g.add_argument("--time", default="60", help="time limit per attempt: minutes or [D-]HH:MM:SS [60]; the job is "
                                                "requeued at the limit and resumes")
    g.add_argument("--time-budget", metavar="MINUTES|auto",
                   help="train.max_minutes: the steps are planned to fit this many minutes; auto: the job's --time "
                        "less the stop signal's lead and a margin for the job's start, so the run finishes (final "
                        "checkpoint and evaluation included) before the scheduler stops it")
    g.add_argument("--mem", help="memory per node, e.g. 256G")
    g.add_argument("--cpus-per-task", type=int, help="CPUs per node (there is one task per node)")
    g.add_argument("--constraint")
    g.add_argument("--exclusive", action="store_true")
    g.add_argument("--job-name", help="default: the run (or sweep) name")
    g.add_argument("--signal", default="USR2@90",
                   help="signal sent SECONDS before the time limit: the trainer checkpoints and the job is "
                        "requeued [USR2@90]")
    g.add_argument("--max-requeues", type=int, default=20, help="stop requeueing after this many restarts [20]")
    g.add_argument("--exit-grace", type=float, default=300.0, metavar="SECONDS",
                   help="once the final adapter is written, kill launchers still running this much later (stuck "
                        "in teardown) and count the run as finished [300]")
    g.add_argument("--setup", action="append", default=[], metavar="CMD",
                   help="shell line run in the sbatch script before srun (module load ...); repeatable")
    g.add_argument("--srun-arg", action="append", default=[], metavar="ARG",
                   help="extra srun argument, e.g. --container-image=... (pyxis); repeatable")
    o = p.add_argument_group("run")
    o.add_argument("--output-root", default="runs", help="shared folder holding one folder per run [runs]")
    o.add_argument("--run-name", help="run name (or sweep name with --sweep) [<config>-<date>-<time>]; an existing "
                                      "run of that name is continued from its newest checkpoint")
    o.add_argument("--sweep", nargs="+", metavar="KEY=V1,V2", help="a job array: one run per combination")
    o.add_argument("--python", default=sys.executable,
                   help="python command on the nodes, e.g. a venv's python or 'apptainer exec --nv img.sif python3' "
                        "[this one: %(default)s]")
    o.add_argument("--port", type=int, help="rendezvous port [derived from the job id and restart count]")
    o.add_argument("--allow-local-output", action="store_true",
                   default=os.environ.get("SQLFT_ALLOW_LOCAL_OUTPUT", "") not in ("", "0"),
                   help="accept an output root under /tmp or on tmpfs (every node must still see it)")
    m = p.add_argument_group("mode")
    x = m.add_mutually_exclusive_group()
    x.add_argument("--dry-run", action="store_true", help="print the sbatch script and node commands; submit nothing")
    x.add_argument("--local", action="store_true", help="run the node commands on this machine, without Slurm")
    m.add_argument("--wait", action="store_true", help="wait for the job(s) and print the result; exit 1 on failure")


COMMAND = Command(
    name="submit",
    description="Train across Slurm nodes through submitit (one task per node running accelerate launch). Every "
                "--section.key VALUE is a training override, checked (in every sweep combination) before anything "
                "is submitted. Rehearse on one machine: slurm/dev-cluster.sh up; eval \"$(slurm/dev-cluster.sh env)\".",
    add_arguments=add_arguments,
    training=True,
)


def _python(text: str) -> str:
    """--python as the nodes will run it: an absolute path when it is one word."""
    words = shlex.split(text)
    exe = words and (shutil.which(words[0]) if os.sep not in words[0] else words[0])
    if not exe or not os.access(exe, os.X_OK):
        raise SubmitError(f"--python '{text}': '{words[0] if words else ''}' is not an executable.")
    return shlex.quote(str(Path(exe).absolute())) if len(words) == 1 else text


def plan(cfg: Config, args: argparse.Namespace, *, check_cluster: bool | None = None) -> Plan:
    """Validate everything and build the runs; raises SubmitError / ConfigError before anything is submitted."""
    if args.nodes < 1:
        raise SubmitError("--nodes must be >= 1.")
    if args.max_requeues < 0:
        raise SubmitError("--max-requeues must be >= 0.")
    if args.exit_grace <= 0:
        raise SubmitError("--exit-grace must be > 0.")
    overrides = args.overrides
    if "train.output_dir" in overrides:
        raise SubmitError("Don't pass --train.output_dir: each run writes to <output-root>/<run-name>/ "
                          "(set --output-root / --run-name).")
    python = _python(args.python)
    time_min = parse_time_minutes(args.time)
    sig, sig_delay = parse_signal(args.signal)
    if sig_delay >= time_min * 60:
        raise SubmitError(f"--signal {args.signal}: {sig_delay} s ahead of a {time_min} min limit leaves no time "
                          f"to train.")
    notes = []
    if args.time_budget is not None:  # = --train.max_minutes, or derived from the time limit
        if "train.max_minutes" in overrides:
            raise SubmitError("--time-budget and --train.max_minutes are the same setting; give one of them.")
        if args.time_budget == "auto":
            minutes, why = budget_from_time_limit(time_min, sig_delay)
            notes.append(f"time budget: train.max_minutes {minutes:g} ({why})")
        else:
            try:
                minutes = float(args.time_budget)
            except ValueError:
                raise SubmitError(f"--time-budget '{args.time_budget}': minutes, or auto.") from None
        overrides = overrides | {"train.max_minutes": minutes}
    mem_mb = parse_mem_mb(args.mem) if args.mem else None
    accel = read_accelerate_config(args.accelerate_config) if args.accelerate_config else None
    dist = slurm.accelerate_distributed_type(args.accelerate_config, args.nodes, accel) if accel else None
    accel_path = str(Path(args.accelerate_config).resolve()) if accel else None
    gpus, gpu_note = resolve_gpus(args.gpus_per_node, args.cpu, cfg, accel, args.accelerate_config, args.nodes)

    config = Path(args.config_path).expanduser().resolve() if args.config_path else None  # None: library defaults
    root = Path(args.output_root).expanduser().absolute()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = args.run_name or f"{config.stem if config else Path(default_output_dir(cfg)).name}-{stamp}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+=-]*", base):
        raise SubmitError(f"--run-name '{base}': use letters, digits and . _ + = - only.")
    combos = expand_sweep(args.sweep) if args.sweep else [{}]
    sweep_dir = root / base if args.sweep else None
    specs = []
    wandb_name = overrides.get("tracking.run_name")  # the W&B run name, when given, else the run's name
    for combo in combos:
        if args.sweep:
            slug = combo_slug(combo)
            name, run_dir, group = f"{base}-{slug}", sweep_dir / slug, base
            wb = f"{wandb_name}-{slug}" if wandb_name else name
        else:
            name, run_dir, group, wb = base, root / base, overrides.get("tracking.group"), wandb_name or base
        run_over = dict(overrides) | combo | {"train.output_dir": str(run_dir), "tracking.run_name": wb}
        if group:
            run_over["tracking.group"] = group
        try:
            load_config(config, run_over)
        except ConfigError as e:
            where = f"sweep run {name}: " if args.sweep else ""
            raise SubmitError(f"{where}{e}") from None
        flat = [a for k, v in run_over.items() for a in (f"--{k}", str(v))]
        specs.append(RunSpec(name=name, run_dir=str(run_dir), config=str(config) if config else None,
                             overrides=flat, nodes=args.nodes, gpus_per_node=gpus, accelerate_config=accel_path,
                             accelerate_distributed=dist, python=python, port=args.port, max_requeues=args.max_requeues,
                             exit_grace_s=args.exit_grace))
    job_name = args.job_name or base
    result = Plan(specs=specs, sweep_dir=sweep_dir, job_name=job_name, notes=([gpu_note] if gpu_note else []) + notes)
    if args.local:
        return result

    have_slurm = shutil.which("scontrol") is not None and shutil.which("sbatch") is not None
    if check_cluster is None:
        check_cluster = have_slurm or not args.dry_run
    if check_cluster and not have_slurm:
        raise SubmitError("No Slurm here (scontrol / sbatch not found): use --local to run without Slurm, or "
                          "--dry-run to see what would be submitted.")
    note = slurm.check_output_root(root, args.allow_local_output)
    if note:
        result.notes.append(note)
    partition = args.partition
    if check_cluster:
        try:
            request = slurm.Request(args.nodes, gpus, args.cpus_per_task, mem_mb, time_min)
            partition = slurm.check_partition(*slurm.query_cluster(), args.partition, request)
        except SubmitError as e:
            if not (args.dry_run and str(e).startswith("scontrol")):
                raise
            result.notes.append(f"note: could not ask Slurm ({str(e).splitlines()[0]}); partition and resources "
                                f"not checked.")
    elif args.dry_run:
        result.notes.append("note: no Slurm here; partition and resources not checked.")
    result.params = sbatch_params(
        job_name=job_name, nodes=args.nodes, gpus_per_node=gpus, time_min=time_min, signal=sig,
        signal_delay_s=sig_delay, partition=partition, account=args.account, qos=args.qos,
        cpus_per_task=args.cpus_per_task, mem_mb=mem_mb, constraint=args.constraint, exclusive=args.exclusive,
        setup=args.setup, srun_args=args.srun_arg)
    return result


def run_local(p: Plan) -> int:
    """The node commands on this machine (head 127.0.0.1, a free port), node 0 on the console, all in logs."""
    rc = 0
    for spec in p.specs:
        run_dir = Path(spec.run_dir)
        logs = run_dir / "local"
        logs.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = spec.port or s.getsockname()[1]
        launchers, files = [], []
        for r in range(spec.nodes):
            out = open(logs / f"node{r}.out", "ab")
            err = open(logs / f"node{r}.err", "ab")
            files += [out, err]
            env = launcher_env(spec, r)
            if spec.gpus_per_node and spec.nodes > 1 and "CUDA_VISIBLE_DEVICES" not in os.environ:
                first = r * spec.gpus_per_node
                env["CUDA_VISIBLE_DEVICES"] = ",".join(str(first + i) for i in range(spec.gpus_per_node))
            cmd = launcher_command(spec, r, "127.0.0.1", port)
            (logs / f"node{r}.cmd").write_text(shlex.join(cmd) + "\n")
            launchers.append(Launcher(cmd, env, spec.repo, [out.fileno()] + ([1] if r == 0 else []),
                                      [err.fileno()] + ([2] if r == 0 else [])))
        print(f"[sqlft] run {spec.name}: {spec.nodes} node(s) x {spec.procs_per_node} process(es) on this machine; "
              f"logs in {logs}/", flush=True)
        try:
            outcome = supervise(launchers, finished=AdapterWatch(run_dir), exit_grace_s=spec.exit_grace_s)
        finally:
            for f in files:
                f.close()
        code = 0 if outcome.ok else outcome.exit_code(spec.total_procs)
        if code == 0:
            print(f"[sqlft] run {spec.name} finished: {json.dumps(run_summary(run_dir))}", flush=True)
            continue
        if code in (EXIT_PREEMPTED, EXIT_KILLED):
            print(f"[sqlft] run {spec.name} stopped; run the same command with --run-name "
                  f"{p.sweep_dir.name if p.sweep_dir else spec.name} to continue from its newest checkpoint.",
                  flush=True)
            return code
        print(f"error: run {spec.name} failed (exit code {code}); logs in {logs}/", file=sys.stderr)
        rc = rc or code
    return rc


def print_dry_run(p: Plan) -> None:
    print(f"# sbatch script ({'job array of ' + str(len(p.specs)) + ' runs, ' if len(p.specs) > 1 else ''}"
          f"submitit writes it to {p.submitit_dir}/<job id>_submission.sh)")
    print(sbatch_script(p))
    print("# per-node commands (each node's submitit task runs its line, forwarding stop signals)")
    print(PORT_NOTE)
    for spec in p.specs:
        print(describe_nodes(spec))
    print("\n# nothing submitted (--dry-run)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg, args = parse(COMMAND, argv)
        p = plan(cfg, args)
    except (SubmitError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    for note in p.notes:
        print(note, file=sys.stderr)
    if args.dry_run:
        print_dry_run(p)
        return 0
    if args.local:
        return run_local(p)

    try:
        jobs = slurm.submit(p, argv, NodeTask)
    except Exception as e:  # noqa: BLE001 - sbatch's own message is the useful part
        print(f"error: submission failed: {e}", file=sys.stderr)
        return 1
    procs = p.specs[0].procs_per_node
    kind = f"{procs} GPU process(es)" if p.specs[0].gpus_per_node else "1 CPU process (gloo; no GPUs requested)"
    head = (f"submitted job array {jobs[0].job_id.split('_')[0]} ({len(jobs)} runs)" if len(jobs) > 1
            else f"submitted job {jobs[0].job_id}")
    print(f"{head}: {args.nodes} node(s) x {kind}, partition {p.params.get('partition') or '(default)'}")
    for spec, job in zip(p.specs, jobs):
        print(f"  run {spec.name}  job {job.job_id}\n    folder: {spec.run_dir}/  (checkpoints/, adapter/, "
              f"metrics.jsonl, job.json)")
        for node, paths in slurm.job_info(spec, job, p)["logs"].items():
            print(f"    {node}: {paths['stdout']}  (+ .err)")
    first = jobs[0].job_id.split("_")[0]
    print(f"  watch: squeue -j {first}; sacct -j {first}   cancel: scancel {first}")
    if not args.wait:
        return 0
    rc = 0
    for spec, (state, res) in zip(p.specs, slurm.wait_for(jobs)):
        if isinstance(res, BaseException):
            rc = 1
            print(f"run {spec.name}: {state}: {str(res).strip().splitlines()[-1] if str(res).strip() else res!r}")
        else:
            print(f"run {spec.name}: {state}: {json.dumps(res)}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
