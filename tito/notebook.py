"""Jupyter users: an `.ipynb` next to each `.py` source, synced back without losing work.

The notebook is not a jupytext pair (JupyterLab with jupytext would rewrite the `.py` itself on
every save, with a header and its own key order). `tito test` and `tito export` carry a newer
notebook back instead, cell by cell: unchanged cells keep their original text byte for byte, and
an edited cell keeps its original `# %%` header line, so the diff shows only the student's edits.
"""
from __future__ import annotations

import difflib
import re
import shutil
import time
from pathlib import Path

from .errors import TitoError
from .modules import Module

BACKUPS = ".tito_backups"  # git-ignored; holds any .py that a newer .ipynb replaced


def write_notebook(module: Module, force: bool = False, root: Path | None = None) -> Path:
    """Write `name_dev.ipynb` from the `.py` source (never over a newer notebook)."""
    import jupytext

    target = module.notebook
    if target.exists() and target.stat().st_mtime > module.source.stat().st_mtime and not force:
        raise TitoError(
            f"{target} is newer than {module.source.name}; run 'tito export {module.id}' to sync it "
            "first (or pass --force to replace the notebook)"
        )
    nb = jupytext.read(module.source, fmt="py:percent")
    nb.metadata.pop("jupytext", None)  # not paired: tito syncs it back (see the module docstring)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if target.exists():  # only with --force over a newer notebook, or an older one: keep a copy
        _backup(target, root or module.folder.parents[1])
    jupytext.write(nb, target, fmt="ipynb")
    return target


def _backup(path: Path, root: Path) -> Path:
    backups = root / BACKUPS
    backups.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = backups / f"{path.stem}-{stamp}{path.suffix}"
    n = 1
    while target.exists():
        n += 1
        target = backups / f"{path.stem}-{stamp}-{n}{path.suffix}"
    shutil.copy2(path, target)
    return target


_HEADER = re.compile(r"^# %%")
# Cell metadata that Jupyter adds or jupytext keeps for layout; it never goes back into the `.py`.
_TRANSIENT = {"execution", "collapsed", "scrolled", "jupyter", "trusted", "lines_to_next_cell", "editable",
              "deletable", "vscode", "id"}


def _blocks(text: str) -> tuple[str, list[str]]:
    "(text before the first cell header, one chunk of raw text per `# %%` cell)."
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _HEADER.match(line)]
    if not starts:
        return text, []
    pre = "".join(lines[:starts[0]])
    ends = starts[1:] + [len(lines)]
    return pre, ["".join(lines[a:b]) for a, b in zip(starts, ends)]


def _meta(cell) -> dict:
    return {k: v for k, v in dict(cell.metadata).items() if k not in _TRANSIENT}


def _render(cell, keep_header: str | None) -> str:
    "One cell as percent-format text (no trailing blank lines); with `keep_header`, that header line."
    import jupytext
    from nbformat.v4 import new_notebook

    cell = cell.copy()
    cell.metadata = _meta(cell)
    text = jupytext.writes(new_notebook(cells=[cell], metadata={"jupytext": {"notebook_metadata_filter": "-all"}}),
                           fmt="py:percent").rstrip("\n")
    lines = text.split("\n")
    if lines and _HEADER.match(lines[0]) and keep_header is not None:
        lines[0] = keep_header.rstrip("\n")
    elif not (lines and _HEADER.match(lines[0])):  # jupytext omits the header of a plain first cell
        lines.insert(0, keep_header.rstrip("\n") if keep_header else "# %%")
    return "\n".join(lines) + "\n"


def _trailing_blank(chunk: str) -> str:
    body = chunk.rstrip("\n")
    return "\n" * (len(chunk) - len(body) - 1) if chunk.endswith("\n") else ""


def merge_notebook(original_text: str, nb) -> str | None:
    """The `.py` for notebook `nb`, reusing `original_text` wherever a cell is unchanged.

    None when the original cannot be lined up with its own cells (then jupytext writes it all).
    """
    import jupytext

    old_cells = jupytext.reads(original_text, fmt="py:percent").cells
    pre, chunks = _blocks(original_text)
    if pre.strip() or len(chunks) != len(old_cells):
        return None
    for chunk, cell in zip(chunks, old_cells):
        is_markdown = bool(re.match(r"^# %%\s*\[(markdown|md)\]", chunk))
        if is_markdown != (cell.cell_type == "markdown"):
            return None
    new_cells = nb.cells
    key = lambda c: (c.cell_type, c.source)  # noqa: E731
    matcher = difflib.SequenceMatcher(None, [key(c) for c in old_cells], [key(c) for c in new_cells], autojunk=False)
    out = []
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            for i, j in zip(range(a0, a1), range(b0, b1)):
                if _meta(old_cells[i]) == _meta(new_cells[j]):
                    out.append(chunks[i])
                else:
                    out.append(_render(new_cells[j], None) + _trailing_blank(chunks[i]))
            continue
        olds = list(range(a0, a1))
        for n, j in enumerate(range(b0, b1)):
            i = olds[n] if n < len(olds) else None
            if i is not None and old_cells[i].cell_type == new_cells[j].cell_type:
                same = _meta(old_cells[i]) == _meta(new_cells[j])
                header = chunks[i].split("\n", 1)[0] if same else None
                out.append(_render(new_cells[j], header) + _trailing_blank(chunks[i]))
            else:
                out.append(_render(new_cells[j], None) + "\n")
    text = "".join(out)
    if original_text.endswith("\n") and not text.endswith("\n"):
        text += "\n"
    if not original_text.endswith("\n\n"):
        text = text.rstrip("\n") + ("\n" if original_text.endswith("\n") else "")
    return text


def sync_newer_notebook(module: Module, root: Path, quiet: bool = False) -> bool:
    """If the paired notebook was edited after the `.py`, carry its content into the `.py`.

    The old `.py` is copied to `.tito_backups/` first, so nothing a student wrote is lost.
    """
    notebook, source = module.notebook, module.source
    if not notebook.exists() or notebook.stat().st_mtime <= source.stat().st_mtime:
        return False
    import jupytext
    try:
        nb = jupytext.read(notebook)
    except Exception as exc:
        raise TitoError(f"{notebook}: cannot be read as a notebook ({exc}); fix or delete it") from None
    old_text = source.read_text(encoding="utf-8")
    try:
        new_text = merge_notebook(old_text, nb)
    except Exception:
        new_text = None
    if new_text is None:
        # Keep the .py free of Jupyter's kernel and pairing metadata: it is the course source.
        nb.metadata = {"jupytext": {"notebook_metadata_filter": "-all"}}
        new_text = jupytext.writes(nb, fmt="py:percent")
    if new_text == old_text:
        return False
    _backup(source, root)
    source.write_text(new_text, encoding="utf-8")
    if not quiet:
        print(f"synced {notebook.name} -> {source.name} (previous .py saved in {BACKUPS}/)")
    return True
