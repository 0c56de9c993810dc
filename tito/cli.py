"""The `tito` command: export, test, status and notebook for the course modules."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    from .testing import print_result, test_module, test_tooling

    root = repo_root()
    modules = _pick(root, args)
    # Test what the source says now: export first (it only rewrites files that changed).
    for module in all_modules(root) if args.all else modules:
        export_module(module, root, quiet=True)
    results = []
    for module in modules:
        result = test_module(module, root, args.pytest_args, args.verbose)
        print_result(result, module.tests_folder(root).is_dir())
        results.append(result)
    if args.all:
        tooling = test_tooling(root, args.pytest_args, args.verbose)
        if tooling is not None:
            print_result(tooling, True)
            results.append(tooling)
    passed = sum(r.passed for r in results)
    failed = sum(r.failed for r in results) + sum(not r.notebook_ok for r in results)
    print(f"tests: {passed} passed, {failed} failed")
    return 0 if all(r.ok for r in results) else 1


def cmd_status(args) -> int:
    from .status import print_status

    return print_status(repo_root())


def cmd_notebook(args) -> int:
    from .notebook import write_notebook

    root = repo_root()
    module = resolve(root, args.module)
    path = write_notebook(module, force=args.force)
    print(f"wrote {path.relative_to(root)} (git-ignored); 'tito export {module.id}' syncs your edits back")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args)


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
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("status", help="which modules are exported, in sync and passing")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("notebook", help="write a paired .ipynb for Jupyter")
    p.add_argument("module")
    p.add_argument("--force", action="store_true", help="replace a notebook that is newer than the .py")
    p.set_defaults(func=cmd_notebook)

    p = sub.add_parser("demo", help="train a digits model, compress it and print the report")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
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
