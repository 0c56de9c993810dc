"""Finding course modules (`modules/NN_name/name_dev.py`) and resolving what a user typed."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import TitoError

_MODULE_DIR = re.compile(r"^(\d\d)_([a-z0-9_]+)$")


def repo_root(start: Path | None = None) -> Path:
    """The folder holding pyproject.toml with [tool.nbdev]: the course repository."""
    here = (start or Path.cwd()).resolve()
    for folder in [here, *here.parents]:
        pyproject = folder / "pyproject.toml"
        if pyproject.exists() and "[tool.nbdev]" in pyproject.read_text(encoding="utf-8"):
            return folder
    raise TitoError("not inside a tinytorch course repository (no pyproject.toml with [tool.nbdev] here or above)")


@dataclass(frozen=True)
class Module:
    number: str  # "18"
    name: str  # "compression"
    folder: Path  # modules/18_compression

    @property
    def id(self) -> str:
        return f"{self.number}_{self.name}"

    @property
    def source(self) -> Path:
        return self.folder / f"{self.name}_dev.py"

    @property
    def given(self) -> list[Path]:
        """Notebooks of given code beside the lesson (`storage_dev.py`, ...): students read them,
        they hold no exercises, and they export with the lesson."""
        return sorted(p for p in self.folder.glob("*_dev.py") if p != self.source)

    @property
    def sources(self) -> list[Path]:
        """Every notebook the module exports: the lesson first, then its given notebooks."""
        return [self.source, *self.given]

    @property
    def notebook(self) -> Path:
        return self.folder / f"{self.name}_dev.ipynb"

    def tests_folder(self, root: Path) -> Path:
        return root / "tests" / self.id


def all_modules(root: Path) -> list[Module]:
    found = []
    modules_dir = root / "modules"
    if not modules_dir.is_dir():
        return found
    for folder in sorted(modules_dir.iterdir()):
        match = _MODULE_DIR.match(folder.name)
        if match and folder.is_dir() and (folder / f"{match.group(2)}_dev.py").exists():
            found.append(Module(match.group(1), match.group(2), folder))
    return found


def resolve(root: Path, wanted: str) -> Module:
    """Accept '18_compression', '18' or 'compression'; anything else names the valid choices."""
    modules = all_modules(root)
    key = wanted.strip().rstrip("/").split("/")[-1]
    for module in modules:
        if key in (module.id, module.number, module.name, module.number.lstrip("0")):
            return module
    choices = ", ".join(m.id for m in modules) or "(none found)"
    raise TitoError(f"unknown module '{wanted}'; choose one of: {choices}", exit_code=2)
