"""What stays on disk after a search: the folders under ``nodes/`` of what may ship; every other one goes."""

from __future__ import annotations

import shutil
from pathlib import Path


class NodeFiles:
    """The folders of ``folder/nodes`` that may ship; nothing is removed until :meth:`keep_only` has run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.kept: set[str] | None = None  # None until a choice is made

    @property
    def choosing_done(self) -> bool:
        return self.kept is not None

    def keep(self, key: str, artifact: str | None) -> None:
        """Keep the candidate ``key``'s folder and the folder its ``artifact`` (relative to ``folder``) lies in."""
        self.kept = self.kept or set()
        self.kept.add(key)
        parts = Path(artifact).parts if artifact else ()
        if len(parts) > 2 and parts[0] == "nodes":
            self.kept.add(parts[1])

    def remove_unkept(self) -> None:
        nodes = self.folder / "nodes"
        if self.kept is None or not nodes.is_dir():
            return
        for path in nodes.iterdir():
            if path.name not in self.kept:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
