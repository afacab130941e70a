"""W&B's offline run files read back, to check what a run told W&B (tests only)."""
from __future__ import annotations

import struct
from pathlib import Path


def wandb_records(run_file: Path) -> list:
    """The records of a W&B run file (`run-<id>.wandb`, what `wandb sync` uploads): LevelDB's log format, a 7-byte
    header (":W&B", magic, version), then 32 KiB blocks of chunks (crc32, length, type: 1 full, 2 first, 3 middle,
    4 last), each record a wandb_internal_pb2.Record."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B", run_file
    pos, buf, out = 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            out.append(wandb_internal_pb2.Record.FromString(buf))
    return out


def wandb_runs(run_dir: Path) -> list[tuple[str, list[str], int | None]]:
    """(run id, kinds of record, exit code or None when the run was never finished) of each offline W&B run."""
    out = []
    for folder in sorted((run_dir / "wandb").glob("offline-run-*")):
        records = wandb_records(next(folder.glob("run-*.wandb")))
        kinds = [r.WhichOneof("record_type") for r in records]
        exits = [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"]
        out.append((folder.name.rsplit("-", 1)[1], kinds, exits[-1] if exits else None))
    return out
