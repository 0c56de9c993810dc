"""Jupyter users: a paired `.ipynb` next to each `.py` source, kept in sync without losing work."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from .errors import TitoError
from .modules import Module

BACKUPS = ".tito_backups"  # git-ignored; holds any .py that a newer .ipynb replaced


def write_notebook(module: Module, force: bool = False) -> Path:
    """Write `name_dev.ipynb` from the `.py` source (never over a newer notebook)."""
    import jupytext

    target = module.notebook
    if target.exists() and target.stat().st_mtime > module.source.stat().st_mtime and not force:
        raise TitoError(
            f"{target} is newer than {module.source.name}; run 'tito export {module.id}' to sync it "
            "first (or pass --force to replace the notebook)"
        )
    nb = jupytext.read(module.source, fmt="py:percent")
    nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
    jupytext.write(nb, target, fmt="ipynb")
    return target


def sync_newer_notebook(module: Module, root: Path, quiet: bool = False) -> bool:
    """If the paired notebook was edited after the `.py`, carry its content into the `.py`.

    The old `.py` is copied to `.tito_backups/` first, so nothing a student wrote is lost.
    """
    import jupytext

    notebook, source = module.notebook, module.source
    if not notebook.exists() or notebook.stat().st_mtime <= source.stat().st_mtime:
        return False
    try:
        nb = jupytext.read(notebook)
    except Exception as exc:
        raise TitoError(f"{notebook}: cannot be read as a notebook ({exc}); fix or delete it") from None
    # Keep the .py free of Jupyter's kernel and pairing metadata: it is the course source.
    nb.metadata.pop("jupytext", None)
    nb.metadata.pop("kernelspec", None)
    nb.metadata.pop("language_info", None)
    new_text = jupytext.writes(nb, fmt="py:percent")
    if new_text == source.read_text(encoding="utf-8"):
        return False
    backups = root / BACKUPS
    backups.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    shutil.copy2(source, backups / f"{source.stem}-{stamp}.py")
    source.write_text(new_text, encoding="utf-8")
    if not quiet:
        print(f"synced {notebook.name} -> {source.name} (previous .py saved in {BACKUPS}/)")
    return True
