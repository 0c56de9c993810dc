"""The course's module numbers agree with the course page, and a release or grading kit of module 18
holds nothing of the modules numbered above it (low-rank factorization and distillation, module 20).

The course page numbers Compression's successor "Module 19: Benchmarking"; nothing is built for
it, so the low-rank/distillation module sits above 19. Were it numbered below 18 or suffixed
(18b), `tito release 18` and the grading kit would ship its solutions with module 18's copy.
"""
from __future__ import annotations

import re

import pytest

from tito_testlib import REPO, run_tito

from tito.modules import all_modules, resolve

COMPRESSION = "18_compression"


def _lowrank_module():
    (module,) = [m for m in all_modules(REPO) if m.name == "lowrank_distill"]
    return module


def _solution_lines(module) -> set[str]:
    "Distinctive lines inside a module's `### BEGIN SOLUTION` regions (long enough not to recur by chance)."
    regions = re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", module.source.read_text(encoding="utf-8"), re.S)
    lines = (line.strip() for region in regions for line in region.splitlines())
    return {line for line in lines if len(line) > 40 and not line.startswith("#")}


def test_lowrank_distill_is_numbered_above_the_pages_benchmarking_module():
    module = _lowrank_module()
    assert int(module.number) > 19
    assert not [m for m in all_modules(REPO) if m.number == "19"], "module 19 is the page's Benchmarking"


def test_readme_module_map_names_every_module_folder():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Module map", 1)[1].split("\n\n", 2)[1]
    for module in all_modules(REPO):
        assert re.search(rf"^\| (\*\*)?{module.id}(\*\*)? \|", table, re.M), f"{module.id} missing from README's module map"
    assert re.search(r"^\| 19 \(Benchmarking\) \|", table, re.M)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    out = tmp_path_factory.mktemp("numbers") / "student"
    proc = run_tito(REPO, "release", COMPRESSION, "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_release_of_module_18_leaves_out_module_20(released):
    later = _lowrank_module()
    assert not (released / "modules" / later.folder.name).exists()
    assert not (released / "tests" / later.id).exists()
    assert not (released / "tinytorch" / "compression" / "lowrank.py").exists()
    assert not (released / "tinytorch" / "compression" / "distill.py").exists()


def test_release_of_module_18_holds_no_line_of_module_20s_solutions(released):
    secrets = _solution_lines(_lowrank_module())
    assert secrets  # the check has something to look for
    for path in released.rglob("*.py"):
        text = path.read_text(encoding="utf-8", errors="replace")
        leaked = [line for line in secrets if line in text]
        assert not leaked, f"{path.relative_to(released)} holds module 20's solution line {leaked[0]!r}"


def test_grading_kit_of_module_18_leaves_out_module_20(tmp_path, monkeypatch):
    from tito.grading.kit import build_kit

    monkeypatch.chdir(REPO)
    kit = tmp_path / "kit"
    build_kit(REPO, resolve(REPO, COMPRESSION), kit)
    for side in ("public", "reference"):   # the student's package and the runner's
        package = kit / side / "tinytorch" / "compression"
        assert (package / "quantize.py").exists()  # earlier modules stay
        assert not (package / "lowrank.py").exists() and not (package / "distill.py").exists()
    assert not (kit / "tests" / _lowrank_module().id).exists()
