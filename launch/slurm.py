"""Slurm itself: what the cluster offers and whether a request fits it, shared storage, the accelerate config's
multi-node rules, submitting through submitit, requeueing, and waiting for jobs. Pre-flight checks take the text
of `scontrol` / `/proc/mounts` as arguments, so they are tested without a cluster; the functions that ask Slurm
(`query_cluster`, `head_node`, `requeue`, `submit`, `wait_for`) are thin."""
from __future__ import annotations

import datetime
import json
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from launch.plan import (
    PORT_NOTE,
    Plan,
    RunSpec,
    SubmitError,
    describe_nodes,
    parse_time_minutes,
    read_accelerate_config,
)

SHARED_FS = {"nfs", "nfs4", "lustre", "gpfs", "beegfs", "ceph", "cephfs", "cifs", "smb3", "glusterfs", "wekafs",
             "panfs", "pvfs2", "orangefs", "afs", "9p", "virtiofs", "vast", "davfs", "quobyte"}
LOCAL_ONLY_FS = {"tmpfs", "ramfs", "devtmpfs", "overlay", "squashfs", "zram"}
LOCAL_ONLY_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run")


# ------------------------------------------------------------------------------------------------
# the cluster and the request


def query_cluster() -> tuple[str, str]:
    """(`scontrol show partition -o`, `scontrol show node -o`)."""
    def run(*args):
        try:
            return subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60, check=True).stdout
        except subprocess.CalledProcessError as e:
            raise SubmitError(f"scontrol {' '.join(args)} failed: {(e.stderr or e.stdout).strip()}") from None
        except subprocess.TimeoutExpired:
            raise SubmitError(f"scontrol {' '.join(args)} did not answer in 60 s: is slurmctld reachable?") from None

    return run("show", "partition", "-o"), run("show", "node", "-o")


def _kv_records(text: str) -> list[dict[str, str]]:
    """`scontrol show ... -o` output: one record per line, `Key=Value` pairs (values may hold spaces)."""
    records = []
    for line in text.splitlines():
        if "=" not in line:
            continue
        pairs = re.findall(r"(\S+?)=(.*?)(?=\s+[A-Za-z][\w:/.]*=|\s*$)", line.strip())
        records.append({k: v.strip() for k, v in pairs})
    return records


def _gpus(gres: str) -> int:
    total = 0
    for part in re.split(r",(?![^()]*\))", gres or ""):
        m = re.match(r"gpu(?::[^:(]+)?:(\d+)", part.strip())
        if m:
            total += int(m.group(1))
    return total


def _slurm_minutes(value: str) -> int | None:
    if not value or value.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A"):
        return None
    return parse_time_minutes(value)


@dataclass
class Request:
    nodes: int
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem_mb: int | None = None
    time_min: int = 60


def check_partition(partitions_text: str, nodes_text: str, partition: str | None, req: Request) -> str:
    """Errors for an unknown partition or a request it can never satisfy; returns the partition's name."""
    parts = {p["PartitionName"]: p for p in _kv_records(partitions_text) if "PartitionName" in p}
    if not parts:
        raise SubmitError("Slurm reports no partitions (scontrol show partition).")
    if partition is None:
        defaults = [n for n, p in parts.items() if p.get("Default") == "YES"]
        if not defaults:
            raise SubmitError(f"No default partition on this cluster: pass --partition ({', '.join(sorted(parts))}).")
        partition = defaults[0]
    if partition not in parts:
        raise SubmitError(f"Partition '{partition}' does not exist on this cluster; partitions: "
                          f"{', '.join(sorted(parts))}.")
    p = parts[partition]
    nodes = [n for n in _kv_records(nodes_text)
             if "NodeName" in n and partition in (n.get("Partitions") or "").split(",")]
    total = int(p.get("TotalNodes") or len(nodes))
    where = f"partition '{partition}'"
    if req.nodes > total:
        raise SubmitError(f"--nodes {req.nodes} is more than {where} has ({total} nodes).")
    max_nodes = p.get("MaxNodes", "UNLIMITED")
    if max_nodes.isdigit() and req.nodes > int(max_nodes):
        raise SubmitError(f"--nodes {req.nodes} is more than {where} allows per job (MaxNodes={max_nodes}).")
    max_time = _slurm_minutes(p.get("MaxTime", "UNLIMITED"))
    if max_time is not None and req.time_min > max_time:
        raise SubmitError(f"--time {req.time_min} min is longer than {where} allows (MaxTime={p['MaxTime']}).")
    if nodes:
        def enough(what: str, need: int | None, have, unit: str) -> None:
            if not need:
                return
            fit = [n for n in nodes if have(n) >= need]
            if len(fit) < req.nodes:
                best = max(have(n) for n in nodes)
                raise SubmitError(f"{what}: {need} {unit} per node is more than {where} offers: {len(fit)} of its "
                                  f"nodes have that many (at most {best} {unit}), the job needs {req.nodes}.")

        enough("--gpus-per-node", req.gpus_per_node, lambda n: _gpus(n.get("Gres", "")), "GPUs")
        enough("--cpus-per-task", req.cpus_per_task, lambda n: int(n.get("CPUTot", 0) or 0), "CPUs")
        enough("--mem", req.mem_mb, lambda n: int(n.get("RealMemory", 0) or 0), "MB")
    if p.get("State", "UP") != "UP":
        print(f"warning: {where} is {p['State']}: the job will wait until it is UP.", file=sys.stderr)
    return partition


# ------------------------------------------------------------------------------------------------
# shared storage


def filesystem_of(path: str | Path, mounts_text: str | None = None) -> tuple[str, str]:
    """(mount point, filesystem type) holding `path` (or its nearest existing parent), from /proc/mounts."""
    p, rest = Path(path).expanduser().absolute(), []
    while not p.exists() and p != p.parent:  # resolve symlinks in the part that exists
        p, rest = p.parent, [p.name, *rest]
    p = p.resolve().joinpath(*rest)
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/mounts").read_text()
        except OSError:
            return "/", "unknown"
    best = ("/", "unknown")
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mnt = fields[1].replace("\\040", " ")
        if (str(p) == mnt or str(p).startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
            best = (mnt, fields[2])
    return best


def check_output_root(root: str | Path, allow_local: bool, mounts_text: str | None = None) -> str | None:
    """The rule: a Slurm job's output root must be storage the compute nodes see.

    Refused (unless --allow-local-output or SQLFT_ALLOW_LOCAL_OUTPUT=1): a path under /tmp, /var/tmp, /dev/shm
    or /run, and any tmpfs / ramfs / overlay / squashfs mount: those are per machine (or per container) even when
    the path exists everywhere. Network filesystems (NFS, Lustre, GPFS, BeeGFS, CephFS, ...) pass; local disks
    (ext4, xfs, ...) pass with a note, since they may be exported or the cluster may be this one machine.
    Returns the note, if any.
    """
    if allow_local:
        return None
    p = str(Path(root).expanduser().absolute())
    mnt, fstype = filesystem_of(p, mounts_text)
    base = fstype.split(".")[0]
    under = next((d for d in LOCAL_ONLY_DIRS if p == d or p.startswith(d + "/")), None)
    if under or base in LOCAL_ONLY_FS:
        why = f"it is under {under}" if under else f"it is on {fstype} (mounted at {mnt})"
        raise SubmitError(
            f"--output-root '{root}' is not on shared storage: {why}, which each node has for itself. The nodes "
            f"would not see the checkpoints nor submitit's files. Use a shared filesystem (e.g. your home or project "
            f"space on NFS / Lustre), or pass --allow-local-output if every node really sees this path (one-machine "
            f"clusters such as slurm/dev-cluster.sh).")
    if base in SHARED_FS or fstype.startswith("fuse."):
        return None
    return (f"note: --output-root is on {fstype} ({mnt}); make sure every node mounts it (shared storage), "
            f"or the job cannot read its pickle nor write checkpoints.")


def accelerate_distributed_type(path: str, nodes: int, data: dict | None = None) -> str:
    """The accelerate config's distributed_type, refusing what can't run across `nodes` Slurm nodes."""
    data = read_accelerate_config(path) if data is None else data
    dist = str(data.get("distributed_type", "NO")).upper()
    if dist == "DEEPSPEED" and nodes > 1:
        launcher = (data.get("deepspeed_config") or {}).get("deepspeed_multinode_launcher", "pdsh")
        if launcher != "standard":
            raise SubmitError(f"--accelerate-config '{path}': multi-node DeepSpeed needs deepspeed_config."
                              f"deepspeed_multinode_launcher: standard (torchrun on every node), not '{launcher}' "
                              f"(pdsh needs ssh between nodes; accelerate #1837).")
    if dist in ("FSDP", "MEGATRON_LM", "XLA", "TPU"):
        raise SubmitError(f"--accelerate-config '{path}': distributed_type {dist} is not supported by ft/train.py.")
    return dist


# ------------------------------------------------------------------------------------------------
# inside a job


def head_node(nodelist: str) -> str:
    """First host of a Slurm node list (`node[1-2]` -> node1), as `scontrol show hostnames` expands it."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=30, check=True).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    from submitit.slurm.slurm import _parse_node_list

    return _parse_node_list(nodelist)[0]


def requeue(job_id: str, tries: int = 3) -> bool:
    for attempt in range(tries):
        try:
            proc = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            proc = subprocess.CompletedProcess([], 1, "", str(e))
        if proc.returncode == 0:
            print(f"[sqlft] requeued job {job_id}", flush=True)
            return True
        print(f"[sqlft] scontrol requeue {job_id} failed: {proc.stderr.strip()}", file=sys.stderr, flush=True)
        time.sleep(2 * (attempt + 1))
    return False


# ------------------------------------------------------------------------------------------------
# submitting and waiting


def write_run_files(spec: RunSpec, argv: list[str]) -> None:
    run_dir = Path(spec.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    text = ["# submitted with", shlex.join([sys.executable, "launch/submit.py", *argv]), "",
            "# per-node commands", PORT_NOTE, describe_nodes(spec), ""]
    (run_dir / "command.txt").write_text("\n".join(text))


def _task_paths(job, nodes: int) -> list:
    return [job.task(t).paths for t in range(nodes)] if nodes > 1 else [job.paths]


def job_info(spec: RunSpec, job, p: Plan) -> dict:
    logs = {f"node{t}": {"stdout": str(paths.stdout), "stderr": str(paths.stderr)}
            for t, paths in enumerate(_task_paths(job, spec.nodes))}
    return {"job_id": job.job_id, "run": spec.name, "run_dir": spec.run_dir, "nodes": spec.nodes,
            "gpus_per_node": spec.gpus_per_node, "submitit_dir": str(p.submitit_dir), "logs": logs,
            "submitted": datetime.datetime.now().isoformat(timespec="seconds")}


def submit(p: Plan, argv: list[str], task: Callable[[RunSpec], Callable]) -> list:
    """One job (or a job array for a sweep) running `task(spec)` on every node; writes command.txt and job.json.

    `task` is what submitit pickles (launch.supervisor.NodeTask): passed in, so that this module needn't import
    the node side."""
    import submitit

    for spec in p.specs:
        write_run_files(spec, argv)
    p.submitit_dir.mkdir(parents=True, exist_ok=True)
    executor = submitit.SlurmExecutor(folder=p.submitit_dir, python=p.specs[0].python)
    executor.update_parameters(**p.params)
    if len(p.specs) == 1:
        jobs = [executor.submit(task(p.specs[0]))]
    else:
        with executor.batch():  # one job array; the jobs are filled in when the block ends
            jobs = [executor.submit(task(spec)) for spec in p.specs]
    for spec, job in zip(p.specs, jobs):
        for paths in _task_paths(job, spec.nodes):
            # A result left by an older job of the same id (a dev cluster restarted from scratch numbers jobs from
            # 1 again) would make this job look finished.
            paths.result_pickle.unlink(missing_ok=True)
        info = job_info(spec, job, p)
        (Path(spec.run_dir) / "job.json").write_text(json.dumps(info, indent=2) + "\n")
    return jobs


def wait_for(jobs: list, poll_s: float = 2.0, timeout_s: float | None = None) -> list[tuple[str, object]]:
    """Wait for every job (through requeues); [(state, result or exception)] in order.

    A job is done when every task left a result, or sacct says it ended (cancelled, failed, timed out): sacct is
    asked every 5 s, not on submitit's back-off (which reaches minutes for multi-task jobs).
    """
    pending = dict(enumerate(jobs))
    out: dict[int, tuple[str, object]] = {}
    last_force, start = 0.0, time.monotonic()
    while pending:
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"jobs {[j.job_id for j in pending.values()]} not done after {timeout_s:.0f} s")
        if time.monotonic() - last_force > 5:
            last_force = time.monotonic()
            type(jobs[0]).watcher.update()  # one sacct call for all registered jobs
        for i, job in list(pending.items()):
            if job.done():
                if not job.state.startswith("COMPLETED"):  # ended without results: don't wait 15 s per task
                    for j in [job, *getattr(job, "_sub_jobs", [])]:
                        j._results_timeout_s = 1
                try:
                    res = job.results()
                    out[i] = ("COMPLETED", res[0] if res else None)
                except Exception as e:  # noqa: BLE001 - reported per job
                    out[i] = (job.state, e)
                del pending[i]
        if pending:
            time.sleep(poll_s)
    return [out[i] for i in range(len(jobs))]
