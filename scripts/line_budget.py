"""The engine's line budget: a number to watch, not a gate.

Counts non-blank, non-comment lines of every ``.py`` file under ``axnb/``, per file, for the
engine (everything except ``view/``, ``widgets/``, ``checks/`` and ``cli.py``,
the definition ``tests/test_layering.py`` enforces) and for the whole package. The ``code``
column also leaves out docstrings.

    python scripts/line_budget.py              # the working tree
    python scripts/line_budget.py --rev dc7081a  # a commit, read with git (no checkout needed)
    python scripts/line_budget.py --total      # one line: engine and package totals
"""

from __future__ import annotations

import argparse
import ast
import io
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "axnb"
NON_ENGINE_DIRS = ("view", "widgets", "checks")
NON_ENGINE_FILES = ("cli.py",)


def is_engine(rel: str) -> bool:
    """``rel`` is a path inside the package, e.g. ``zoo/minilm.py`` or ``view/plots.py``."""
    parts = rel.split("/")
    return parts[0] not in NON_ENGINE_DIRS and rel not in NON_ENGINE_FILES


def _docstring_lines(tree: ast.AST) -> set[int]:
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                out.update(range(body[0].lineno, body[0].end_lineno + 1))
    return out


def count(source: str) -> tuple[int, int]:
    """(non-blank non-comment lines, the same without docstrings) of one Python source."""
    # NOTE: a line counts when it holds any token other than a comment, newline or indent;
    # so the lines inside a multi-line string count, a '#' inside a string is not a comment.
    code: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER, tokenize.ENCODING}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            code.update(range(tok.start[0], tok.end[0] + 1))
    docs = _docstring_lines(ast.parse(source))
    return len(code), len(code - docs)


def sources(rev: str | None) -> dict[str, str]:
    """{path inside the package: source} of the working tree or of commit ``rev``."""
    if rev is None:
        base = ROOT / PACKAGE
        return {p.relative_to(base).as_posix(): p.read_text(encoding="utf-8")
                for p in sorted(base.rglob("*.py"))}
    names = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", rev,
                            f"{PACKAGE}/"], check=True, capture_output=True, text=True).stdout
    out = {}
    for name in sorted(n for n in names.split() if n.endswith(".py")):
        out[name.removeprefix(f"{PACKAGE}/")] = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:{name}"], check=True, capture_output=True,
            text=True).stdout
    return out


def budget(rev: str | None = None) -> dict[str, tuple[int, int]]:
    return {rel: count(src) for rel, src in sources(rev).items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", help="a git commit instead of the working tree")
    ap.add_argument("--total", action="store_true", help="print only the totals")
    args = ap.parse_args(argv)
    rows = budget(args.rev)
    engine = {k: v for k, v in rows.items() if is_engine(k)}
    tot = lambda d, i: sum(v[i] for v in d.values())  # noqa: E731
    where = args.rev or "working tree"
    if args.total:
        print(f"{where}: engine {tot(engine, 0)} lines ({tot(engine, 1)} code), "
              f"package {tot(rows, 0)} lines ({tot(rows, 1)} code)")
        return 0
    print(f"axnb line budget ({where}); lines = non-blank non-comment, code = also no docstrings")
    print(f"{'file':32} {'lines':>6} {'code':>6}")
    for rel, (n, c) in rows.items():
        print(f"{rel:32} {n:6} {c:6}{'' if rel in engine else '   (not engine)'}")
    print(f"{'engine total':32} {tot(engine, 0):6} {tot(engine, 1):6}")
    print(f"{'package total':32} {tot(rows, 0):6} {tot(rows, 1):6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
