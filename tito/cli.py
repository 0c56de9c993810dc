"""The `tito` command: export, test, status and notebook for the course modules; release, grade and
autograder for instructors."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import ONE_BLAS_THREAD
from .errors import TitoError
from .modules import Module, all_modules, repo_root, resolve


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        raise TitoError(f"{message} (see '{self.prog} --help')", exit_code=2)


def _pick(root: Path, args) -> list[Module]:
    if getattr(args, "all", False):
        if args.module:
            raise TitoError("give a module or --all, not both", exit_code=2)
        modules = all_modules(root)
        if not modules:
            raise TitoError("no modules found under modules/")
        return modules
    if not args.module:
        names = ", ".join(m.id for m in all_modules(root))
        raise TitoError(f"name a module or pass --all; modules: {names}", exit_code=2)
    return [resolve(root, args.module)]


def cmd_export(args) -> int:
    from .export import export_module

    root = repo_root()
    for module in _pick(root, args):
        written = export_module(module, root)
        shown = ", ".join(str(p.relative_to(root)) for p in written if p.suffix == ".py")
        print(f"exported {module.id} -> {shown}")
    return 0


def cmd_test(args) -> int:
    from .export import export_module
    from .notebook import sync_newer_notebook
    from .testing import check_tasks, export_if_changed, print_result, test_module, test_tooling

    root = repo_root()
    modules = _pick(root, args)
    tasks = None
    if args.task:
        if args.all:
            raise TitoError("--task needs one module, not --all", exit_code=2)
        tasks = check_tasks(modules[0], root, args.task)
    # Test what the source says now: export first (it only rewrites files that changed). One
    # module: the notebook (which runs the source itself) starts while the export runs.
    if args.all:
        for module in all_modules(root):
            export_module(module, root, quiet=True)
    results = []
    for module in modules:
        export = None
        if not args.all:
            sync_newer_notebook(module, root, quiet=False)
            export = lambda module=module: export_if_changed(module, root)  # noqa: E731
        result = test_module(module, root, args.pytest_args, args.verbose, tasks=tasks, export=export)
        print_result(result, module.tests_folder(root).is_dir())
        results.append(result)
    if args.all:
        tooling = test_tooling(root, args.pytest_args, args.verbose)
        if tooling is not None:
            print_result(tooling, True)
            results.append(tooling)
    passed = sum(r.passed for r in results)
    failed = sum(r.failed for r in results)
    print(f"tests: {passed} passed, {failed} failed")
    return 0 if all(r.ok for r in results) else 1


def cmd_status(args) -> int:
    from .status import print_status

    return print_status(repo_root())


def cmd_notebook(args) -> int:
    from .notebook import write_notebook

    root = repo_root()
    module = resolve(root, args.module)
    path = write_notebook(module, force=args.force, root=root)
    rel = path.relative_to(root)
    print(f"wrote {rel} (git-ignored; any notebook it replaced is kept in .tito_backups/)")
    print(f"open it:  jupyter lab {rel}    (no JupyterLab? pip install -e \".[jupyter]\")")
    print(f"then:     tito test {module.id} --task ID   (or tito export {module.id}) carries your notebook "
          f"edits back into {module.source.name}; the previous .py is kept in .tito_backups/")
    return 0


def _one_line_errors(command):
    """Instructor commands: any unexpected failure is one line too (TITO_TRACEBACK=1 shows it)."""
    import functools
    import os

    @functools.wraps(command)
    def run(args) -> int:
        try:
            return command(args)
        except (TitoError, KeyboardInterrupt):
            raise
        except Exception as exc:
            if os.environ.get("TITO_TRACEBACK"):
                raise
            if isinstance(exc, OSError) and exc.strerror:
                raise TitoError(f"{exc.strerror}: {exc.filename or ''}".rstrip(": ")) from None
            raise TitoError(f"{type(exc).__name__}: {exc}") from None

    return run


@_one_line_errors
def cmd_release(args) -> int:
    from .release import release

    root = repo_root()
    out = release(root, args.module, Path(args.out), force=args.force)
    print(f"released {resolve(root, args.module).id} -> {out} (solutions stubbed, hidden tests left out)")
    return 0


def _graded_modules(root: Path) -> list[Module]:
    from .graded import POINTS_FILE

    return [m for m in all_modules(root) if (m.tests_folder(root) / POINTS_FILE).exists()]


@_one_line_errors
def cmd_grade(args) -> int:
    import json
    import tempfile

    from .grading import gradebook, selfcheck
    from .grading.feedback import print_results
    from .grading.kit import Kit, build_kit
    from .grading.submission import grade_submission

    root = None if args.action == "run" and args.kit else repo_root()
    if args.action == "self-check":
        if args.all == bool(args.module):
            raise TitoError("name one module to check, or pass --all", exit_code=2)
        modules = _graded_modules(root) if args.all else [resolve(root, args.module)]
        results = [selfcheck.self_check(root, module) for module in modules]
        print(f"self-check: {sum(results)} passed, {len(results) - sum(results)} failed")
        return 0 if all(results) else 1
    if args.action == "list":
        with tempfile.TemporaryDirectory(prefix="tito-kit-") as tmp:
            selfcheck.print_listing(build_kit(root, resolve(root, args.module), Path(tmp) / "kit"))
        return 0
    if args.jobs < 1:
        raise TitoError(f"--jobs must be at least 1, got {args.jobs}", exit_code=2)
    limits = {}
    if args.timeout is not None:
        if args.timeout <= 0:
            raise TitoError(f"--timeout must be positive, got {args.timeout:g}", exit_code=2)
        limits["test_timeout"] = args.timeout
    submission = Path(args.submission)
    if not submission.exists():
        raise TitoError(f"{submission} does not exist", exit_code=2)
    if not args.kit and not args.module:
        raise TitoError("which module? pass --module, e.g. --module 18_compression", exit_code=2)
    with tempfile.TemporaryDirectory(prefix="tito-kit-") as tmp:
        if args.kit:
            kit = Kit.load(Path(args.kit))
        else:
            module = resolve(root, args.module)
            if submission.is_dir() and not gradebook.is_single_submission(submission, module.name) \
                    and not gradebook.submissions_in(submission):
                raise TitoError(f"{submission} holds no submissions (.py or .ipynb files, or one folder per student)")
            kit = build_kit(root, module, Path(tmp) / "kit")
        # With --kit (the autograder) a folder is one student's upload; otherwise a folder holding
        # the module's notebook is one student's, and any other folder is a batch.
        if submission.is_dir() and not args.kit and not gradebook.is_single_submission(submission, kit.manifest["module_name"]):
            results = gradebook.grade_batch(kit, submission, Path(args.out or f"grades-{kit.module}"), args.jobs, limits,
                                            not args.no_landlock, args.assignment,
                                            Path(args.roster) if args.roster else None, args.roster_key,
                                            args.score_column)
        else:
            results = grade_submission(kit, submission, limits=limits, landlock=not args.no_landlock, keep=args.keep)
            print_results(results)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


@_one_line_errors
def cmd_autograder(args) -> int:
    from .autograder import build_bundle

    root = repo_root()
    out = build_bundle(root, args.module, Path(args.out), force=args.force)
    print(f"wrote {out} (upload it as the Gradescope autograder)")
    return 0


def cmd_tasks(args) -> int:
    from .prerequisites import readme_block, task_table, update_readme

    root = repo_root()
    if args.readme:
        modules = [resolve(root, args.module)] if args.module else _graded_modules(root)
        path = Path(args.readme)
        if not path.is_file():
            raise TitoError(f"{path} does not exist", exit_code=2)
        changed = update_readme(path, readme_block(root, modules))
        print(f"{'updated' if changed else 'unchanged'}: the task tables in {path} ({', '.join(m.id for m in modules)})")
        return 0
    if not args.module:
        raise TitoError("name a module, e.g. tito tasks 18, or pass --readme README.md", exit_code=2)
    print(task_table(resolve(root, args.module), root))
    return 0


def cmd_compress(args) -> int:
    from .compress import run_compress

    return run_compress(args)


def cmd_bench(args) -> int:
    from .bench import run_bench

    return run_bench(args)


def _module_out_force(p, module_help: str, out_name: str, out_help: str, func) -> None:
    "The arguments of the commands that write one module's artefact: MODULE --out PATH [--force]."
    p.add_argument("module", help=module_help)
    p.add_argument("--out", required=True, metavar=out_name, help=out_help)
    p.add_argument("--force", action="store_true", help=f"replace {out_name} if it exists")
    p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tito", description="The tinytorch course command line.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("export", help="export a module's source into the tinytorch package")
    p.add_argument("module", nargs="?", help="e.g. 18_compression, 18 or compression")
    p.add_argument("--all", action="store_true", help="export every module")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("test", help="run a module's inline tests and its pytest suite")
    p.add_argument("module", nargs="?", help="e.g. 18_compression, 18 or compression")
    p.add_argument("--all", action="store_true", help="test every module")
    p.add_argument("-v", "--verbose", action="store_true", help="show all output")
    p.add_argument("-k", dest="pytest_k", help="only pytest tests matching this expression")
    p.add_argument("--task", action="append", metavar="ID",
                   help="only this exercise (task id as in the stubs and points.toml; repeat or comma-separate "
                        "for several): its inline and graded tests and what they need")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("status", help="which modules are exported, in sync and passing")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("notebook", help="write a paired .ipynb for Jupyter")
    p.add_argument("module")
    p.add_argument("--force", action="store_true", help="replace a notebook that is newer than the .py")
    p.set_defaults(func=cmd_notebook)

    p = sub.add_parser("tasks", help="a module's tasks, points and the tasks each needs first (read from the code)")
    p.add_argument("module", nargs="?", help="e.g. 18_compression (with --readme: default every graded module)")
    p.add_argument("--readme", metavar="FILE", help="render the tables into FILE's '<!-- tasks: begin' block")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("release", help="instructors: a student copy of the course without a module's solutions")
    _module_out_force(p, "the module whose solutions are removed, e.g. 18_compression", "DIR",
                      "where to write the student copy", cmd_release)

    p = sub.add_parser("grade", help="instructors: grade submissions against the visible and hidden tests")
    grade = p.add_subparsers(dest="action", required=True, metavar="{run,self-check,list}")
    q = grade.add_parser("run", help="grade a student's .py/.ipynb, their folder, or a folder of submissions")
    q.add_argument("submission", help="a student's .py or .ipynb, a student's folder, or a folder of submissions")
    q.add_argument("-m", "--module", help="the module to grade, e.g. 18_compression")
    q.add_argument("--json", metavar="FILE", help="also write the results (Gradescope's results.json format)")
    q.add_argument("--out", metavar="DIR", help="batch: folder for gradebook.csv and results/ (default grades-MODULE)")
    q.add_argument("-j", "--jobs", type=int, default=1, help="batch: submissions graded in parallel")
    q.add_argument("--assignment", help="batch: the gradebook's assignment name (default: the module id)")
    q.add_argument("--score-column", choices=("score", "assignment"), default="score",
                   help="batch: name the score column 'score' or after the assignment (for an LMS import)")
    q.add_argument("--roster", metavar="CSV", help="batch: an LMS roster export; its columns (SID, Email, ...) join "
                                                   "the gradebook, matched to the submission folder names")
    q.add_argument("--roster-key", metavar="COLUMN", help="batch: the roster column holding the folder names "
                                                         "(default: the column that matches most of them)")
    q.add_argument("--timeout", type=float, help="seconds of wall clock per test (default from points.toml)")
    q.add_argument("--kit", help=argparse.SUPPRESS)
    q.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    q.add_argument("--no-landlock", action="store_true", help=argparse.SUPPRESS)
    q = grade.add_parser("self-check", help="check that each task's tests pass on the solution and fail on the stub")
    q.add_argument("module", nargs="?", help="e.g. 18_compression")
    q.add_argument("--all", action="store_true", help="every graded module")
    q = grade.add_parser("list", help="show a module's tasks, points and graded tests")
    q.add_argument("module", help="e.g. 18_compression")
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("autograder", help="instructors: build a Gradescope autograder bundle")
    _module_out_force(p, "e.g. 18_compression", "ZIP", "e.g. autograder.zip", cmd_autograder)

    p = sub.add_parser("compress", help="train a digits model, prune and quantize it, print the report")
    p.add_argument("--model", choices=["mlp", "cnn"], default="mlp", help="reference digits model (default mlp)")
    p.add_argument("--sparsity", type=float, help="fraction of weights pruned (default: the model's recipe, MLP 0.95)")
    p.add_argument("--bits", type=int, help="bits per surviving weight; INT8 is always reported too (default: the recipe's, MLP 3)")
    p.add_argument("--index-bits", type=int, help="bits per delta index (default: the INT8 file takes the recipe's, MLP 6; the best file chooses per weight)")
    p.add_argument("--bias-bits", type=int, choices=[8, 16, 32], default=8, help="bits per bias (default 8)")
    p.add_argument("--steps", type=int, default=10, help="pruning steps of the cubic schedule (default 10)")
    p.add_argument("--epochs-per-step", type=int, default=3, help="fine-tuning epochs after each step (default 3)")
    p.add_argument("--lr", type=float, default=3e-3, help="fine-tuning learning rate, Adam (default 3e-3)")
    p.add_argument("--qat-epochs", type=int, default=10,
                   help="epochs of fine-tuning with the quantizer in the loop (default 10)")
    p.add_argument("--share", action="store_true", help="k-means weight sharing instead of uniform codes")
    p.add_argument("--coding", choices=["huffman", "fixed"], default="huffman",
                   help="Huffman-code the stored codes, or keep them fixed-width (default huffman)")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation and shuffling (default 0)")
    p.add_argument("--out", type=Path, help="also keep the compressed file here (a .ttcz file)")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("bench", help="run a module's benchmark suite; writes a markdown report and PNG plots")
    p.add_argument("module", help="e.g. 18_compression")
    p.add_argument("--quick", action="store_true", help="a short run (about a minute) instead of the full one")
    p.add_argument("--out", metavar="DIR", help="report folder (default bench_results/scratch/MODULE-MODE, git-ignored)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out of the comparison even if installed")
    p.add_argument("--tables", metavar="NAME[,NAME]", help="rerun only these tables (keys as in results.json, "
                   "e.g. deep_compression_lenet300) and replace just their entries in --out's results.json")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tito's own tests: seconds, not minutes
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Before anything imports NumPy; every process tito starts inherits them.
    for name, value in ONE_BLAS_THREAD.items():
        os.environ.setdefault(name, value)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return 2
        if hasattr(args, "pytest_k"):
            args.pytest_args = ["-k", args.pytest_k] if args.pytest_k else []
        return args.func(args)
    except TitoError as err:
        print(f"tito: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("tito: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
