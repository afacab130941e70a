"""Files others can read: what we write gets the user's umask, as a plain open() would.

Temporary files and folders (tempfile.mkstemp / mkdtemp) are created 0600 / 0700, and safetensors writes its files
0600; renamed into place they would keep those modes, and on shared storage other users and serving processes
(vLLM reading a merged model) could not read them. `share` gives a finished file or folder the modes a plain
open() / mkdir() would have given it.
"""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path


def current_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; set it straight back
    os.umask(mask)
    return mask


def share(path: str | Path) -> None:
    """Folders 0777 and files 0666 less the umask, for `path` and everything under it."""
    mask = current_umask()
    path = Path(path)
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in paths:
        if p.is_symlink():
            continue
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def check_writable(folder: Path, what: str) -> None:
    """Before any model is loaded: an output place that can't be written would lose the whole evaluation."""
    from ft.config import ConfigError

    probe = folder / f".write-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
    except OSError as e:
        raise ConfigError(f"{what} '{folder}': cannot write there ({e.strerror or e}).") from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:  # the folder itself couldn't be made: there is no probe to remove
            pass


# ------------------------------------------------------------------------------------------------
# a full disk, said in one line wherever it happens


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def naming(path: str | Path):
    """Around writes to `path`: an OSError that names no file (write() and flush() errors never do) gets this one, so
    the one line the command prints says where the disk is full."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise


def no_space_line(e: BaseException, where: str | Path | None = None) -> str | None:
    """The one line for a full disk (None for any other error): the file being written (or `where`), and what's free."""
    import shutil

    if not is_disk_full(e):
        return None
    path = Path(e.filename or where or ".").resolve()
    folder = next((p for p in (path, *path.parents) if p.is_dir()), Path("/"))
    try:
        free = f"; {shutil.disk_usage(folder).free / 2**20:.0f} MiB free there"
    except OSError:
        free = ""
    quota = " (disk quota exceeded)" if e.errno == errno.EDQUOT else ""
    return (f"no space left on {path}{quota}{free}: free space, then run the same command again (what was written "
            f"before is kept)")
