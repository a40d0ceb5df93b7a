"""The run folder: which files are optiforge's, one run at a time, and a ``run.json`` that says how it ended.

A run never deletes a file it did not write. Running again into the folder of
an earlier run replaces only that run's own files (``run.json``, the report,
the plots and the folders its ``run.json`` lists); anything else in the folder
stays. A folder that holds files but no ``run.json`` is not a run folder and
is refused. A lock file holding the PID and host of the running process keeps
a second run out; the lock of a process that no longer runs is taken over.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import socket
from pathlib import Path

from optiforge.errors import ConfigError, OptiforgeError
from optiforge.files import atomic_write_text, remove_temporary_files

log = logging.getLogger("optiforge")

LOCK_NAME = ".optiforge.lock"
RUN_FILES = ("run.json", "report.json", "report.md", "training_curves.png", "tradeoff.png")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]+")
_DISK_ERRORS = {
    errno.ENOSPC: "the disk is full; free some space or choose another --out",
    errno.EDQUOT: "the disk quota is used up; free some space or choose another --out",
    errno.EROFS: "the file system is read-only; choose another --out",
    errno.EACCES: "no permission to write there; choose another --out",
    errno.EPERM: "no permission to write there; choose another --out",
    errno.ENAMETOOLONG: "the path is too long; choose a shorter --out",
}


def disk_error(error: BaseException, run_dir: Path) -> OptiforgeError | None:
    """One readable error for a failed write (full disk, read-only folder), else ``None``."""
    if not isinstance(error, OSError) or error.errno not in _DISK_ERRORS:
        return None
    path = error.filename or run_dir
    return OptiforgeError(f"cannot write '{path}': {error.strerror or 'write failed'}; {_DISK_ERRORS[error.errno]}")


def _read_json(path: Path) -> dict:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def _is_ours(path: Path) -> bool:
    return path.name == LOCK_NAME or bool(re.fullmatch(r"\..+\.tmp", path.name))


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:  # a killed child not yet waited for is a zombie: it holds nothing
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def lock_holder(run_dir: Path) -> dict | None:
    """``{"pid", "host"}`` of the live run that holds ``run_dir``, or ``None`` when it is free (or the lock stale)."""
    if not (run_dir / LOCK_NAME).exists():
        return None
    holder = _read_json(run_dir / LOCK_NAME)
    pid, host = holder.get("pid"), holder.get("host")
    if isinstance(pid, int) and host == socket.gethostname() and not _process_runs(pid):
        return None
    return {"pid": pid, "host": host}


def _busy(run_dir: Path, holder: dict) -> ConfigError:
    return ConfigError(
        f"--out: '{run_dir}' is in use by another optiforge run (PID {holder['pid']} on {holder['host']}); "
        f"wait for it to end or choose another --out (if no run is there, delete '{run_dir / LOCK_NAME}')"
    )


def check_run_folder(run_dir: Path) -> None:
    """Refuse a folder that is not a run folder, or one another run holds; writes nothing."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out: '{run_dir}' is a file; choose a folder")
    if run_dir.is_dir() and not (run_dir / "run.json").is_file():
        foreign = [path.name for path in run_dir.iterdir() if not _is_ours(path)]
        if foreign:
            raise ConfigError(
                f"--out: '{run_dir}' holds files ({', '.join(sorted(foreign)[:3])}) but no run.json, so it is not "
                "an optiforge run folder; choose another --out"
            )
    holder = lock_holder(run_dir) if run_dir.is_dir() else None
    if holder is not None:
        raise _busy(run_dir, holder)


class RunFolder:
    """The folder one run writes, held with a lock while the run lasts (only the main process opens one)."""

    def __init__(self, run_dir: Path, folders: list[str]) -> None:
        self.run_dir = run_dir
        self.folders = folders  # the folders this run writes, kept in run.json for the next run to replace
        self.locked = False

    def open(self, resume: bool) -> None:
        """Check the folder, lock it, clear what an earlier run left, and mark this run as running."""
        check_run_folder(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        if resume:
            for path in remove_temporary_files(self.run_dir):
                log.info("removed %s, left by a killed write", path)
        else:
            self._remove_previous_run()
        self._write_state({"status": "running"})

    def _lock(self) -> None:
        path = self.run_dir / LOCK_NAME
        content = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
        for _ in range(2):
            try:
                descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = lock_holder(self.run_dir)
                if holder is not None:
                    raise _busy(self.run_dir, holder) from None
                log.info("taking over the lock of a run that no longer runs: %s", path)
                path.unlink(missing_ok=True)
                continue
            with os.fdopen(descriptor, "w") as file:
                file.write(content + "\n")
            self.locked = True
            return
        holder = lock_holder(self.run_dir) or {"pid": "unknown", "host": "unknown"}
        raise _busy(self.run_dir, holder)

    def _remove_previous_run(self) -> None:
        state = _read_json(self.run_dir / "run.json")
        folders = state.get("folders")
        if not isinstance(folders, list):  # a run.json without the list: the folders its report names
            rows = _read_json(self.run_dir / "report.json").get("stages", [])
            folders = [Path(row["artifact"]).parts[0] for row in rows if isinstance(row, dict) and row.get("artifact")]
        removed = False
        for name in {*map(str, folders), "export"}:
            path = self.run_dir / name
            if _PLAIN_NAME.fullmatch(name) and name not in (".", "..") and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
                removed = True
        for name in RUN_FILES:
            removed |= (self.run_dir / name).is_file()
            (self.run_dir / name).unlink(missing_ok=True)
        remove_temporary_files(self.run_dir)
        if removed:
            log.info("replaced the previous run's files in %s", self.run_dir)

    def _write_state(self, state: dict) -> None:
        atomic_write_text(self.run_dir / "run.json", json.dumps({**state, "folders": self.folders}) + "\n")

    def finish(self) -> None:
        self._write_state({"status": "complete"})

    def fail(self, reason: str) -> None:
        """Record why the run stopped; a folder that cannot be written any more keeps what it has."""
        with contextlib.suppress(OSError):
            self._write_state({"status": "failed", "reason": reason})

    def close(self) -> None:
        if self.locked:
            with contextlib.suppress(OSError):
                (self.run_dir / LOCK_NAME).unlink()
            self.locked = False
