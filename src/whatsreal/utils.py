"""Small shared helpers: atomic writes, temporary folders that a later run can sweep, and
process memory."""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)


def atomic_write_with(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place,
    so a killed process never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomic binary write."""
    return atomic_write_with(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Atomic text write (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Write a matplotlib figure to ``path`` as PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    try:
        return atomic_write_with(path, lambda p: fig.savefig(p, dpi=dpi, format="png"))
    finally:
        plt.close(fig)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Atomic, pretty-printed JSON write."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def other_tracks(path: str | Path, rerun: Iterable[str]) -> dict[str, Any]:
    """The tracks of a previous results JSON at ``path`` that this run does not redo, each
    with the command that produced it, so a benchmark run on some tracks keeps the rest."""
    path = Path(path)
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    rerun = set(rerun)
    return {
        t: {**r, "command": r.get("command", old.get("command"))}
        for t, r in (old.get("tracks") or {}).items()
        if t not in rerun
    }


def machine_info() -> dict[str, Any]:
    """Where a benchmark ran (cores, platform, torch and its threads), for its results JSON."""
    import platform

    import torch

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024


# -- temporary siblings: named so a later run can tell a dead run's leftovers -------------------

TEMP_TAG = "whatsreal-tmp"
# ``.NAME.whatsreal-tmp-PID-XXXXXXXX``; older releases wrote ``.NAME.tmp-PID[-XXXXXXXX]``.
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?:whatsreal-)?tmp-(?P<pid>\d+)(?:-[0-9a-f]{8})?$")


def folder_bytes(path: str | Path) -> int:
    """Bytes of every file under ``path`` (a file's own size if it is one)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def temp_sibling(path: str | Path) -> Path:
    """A hidden, unique path beside ``path`` (same filesystem, so a rename is atomic) whose
    name carries this process's id, so a later run can tell a killed run's leftovers."""
    path = Path(path)
    return path.parent / f".{path.name}.{TEMP_TAG}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (signal 0 probes without harm)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists but belongs to someone else
        return True
    return True


def _newest_mtime(path: Path) -> float:
    """Latest modification time of ``path`` or of anything inside it (0 if it vanished)."""
    try:
        newest = path.lstat().st_mtime
    except FileNotFoundError:
        return 0.0
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                try:
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
                except FileNotFoundError:
                    pass
    return newest


def remove_path(path: Path) -> None:
    """Delete a file or a folder tree; missing is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_stale_temps(path: str | Path, max_age_s: float = 3600.0) -> list[Path]:
    """Remove the hidden temporary siblings of ``path`` that a killed run left behind.

    A sibling is stale when the process named in it is gone, or when nothing inside it
    changed for ``max_age_s`` (its id was reused). Temporaries of live runs, and of this
    process, are left alone, so two runs never delete each other's work.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    now = time.time()
    for entry in path.parent.iterdir():
        m = _TEMP_RE.match(entry.name)
        if m is None or m["name"] != path.name:
            continue
        pid = int(m["pid"])
        if pid == os.getpid():
            continue
        if pid_alive(pid) and now - _newest_mtime(entry) < max_age_s:
            continue
        remove_path(entry)
        removed.append(entry)
        _log.info("removed %s, left behind by an interrupted run (pid %d)", entry, pid)
    return removed


def check_folder_target(
    final: str | Path, overwrite: bool, replaceable: Callable[[Path], bool] | None = None
) -> None:
    """Refuse, before any work, to write a folder over existing files: a new or empty folder
    is fine; a non-empty one needs ``overwrite`` and must pass ``replaceable`` (it holds only
    what an earlier export of the same kind wrote), so unrelated files are never deleted."""
    final = Path(final)
    if not final.exists():
        return
    if not final.is_dir():
        raise FileExistsError(f"{final} exists and is a file; give a folder path that is free")
    if not any(final.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(
            f"{final} already exists and is not empty; pass overwrite=True (CLI: --overwrite) "
            "to replace it, or choose a new folder"
        )
    if replaceable is not None and not replaceable(final):
        raise FileExistsError(
            f"{final} holds files that this export did not write; refusing to replace it even "
            "with overwrite. Choose a new or empty folder"
        )


def replace_folder(
    tmp: Path, final: str | Path, overwrite: bool, replaceable: Callable[[Path], bool] | None = None
) -> Path:
    """Rename the finished folder ``tmp`` onto ``final`` (checked by :func:`check_folder_target`);
    an existing ``final`` is first moved aside, so readers see the old or the new set of files,
    never a mix."""
    final = Path(final)
    check_folder_target(final, overwrite, replaceable)
    if final.exists():
        trash = temp_sibling(final)
        os.replace(final, trash)
        try:
            os.replace(tmp, final)
        except BaseException:
            os.replace(trash, final)  # put the old folder back
            raise
        remove_path(trash)
    else:
        os.replace(tmp, final)
    return final


@contextmanager
def atomic_folder(
    final: str | Path, overwrite: bool = False, replaceable: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """Yield a hidden temporary folder to fill; on success it is renamed onto ``final``, on any
    error (or kill, via the next run's sweep) it is removed, so a multi-file export is complete
    or absent, and never mixes stale files with new ones."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(final)
    check_folder_target(final, overwrite, replaceable)
    tmp = temp_sibling(final)
    tmp.mkdir()
    try:
        yield tmp
        replace_folder(tmp, final, overwrite, replaceable)
    except BaseException:
        remove_path(tmp)
        raise
