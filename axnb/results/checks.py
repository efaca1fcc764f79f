"""Results of the troubleshooting checks: :class:`Check` and :class:`Diagnosis`."""

from __future__ import annotations

import dataclasses
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from axnb.files import write_bytes
from axnb.results.serialize import plain

VERDICTS = ("pass", "warn", "fail")


@dataclass(frozen=True)
class Check:
    """One checklist item: verdict "pass" | "warn" | "fail", a one-line summary, figures, a fix."""

    name: str
    verdict: str
    summary: str
    details: dict = field(default_factory=dict, hash=False)
    fix: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r}; valid: {', '.join(VERDICTS)}")
        object.__setattr__(self, "details", plain(self.details))

    def line(self) -> str:
        """The check as one line of text (the CLI's), its fix appended when it has one.

        Example:
            >>> Check("a", "fail", "x differs", fix="set y").line()
            'a: fail - x differs. Fix: set y'
        """
        return f"{self.name}: {self.verdict} - {self.summary}" + (
            f". Fix: {self.fix}" if self.fix else "")

    def table(self):
        """``details["rows"]`` as a pandas DataFrame (the checks that have a table)."""
        import pandas as pd

        return pd.DataFrame(self.details.get("rows", []))

    def to_frame(self):
        """The check as one row: check, verdict, summary, fix (its table: :meth:`table`)."""
        return Diagnosis((self,)).to_frame()

    def save(self, path: str | Path) -> Path:
        return Diagnosis((self,)).save(path)

    @classmethod
    def load(cls, path: str | Path) -> Check:
        return Diagnosis.load(path).checks[0]

    def _repr_html_(self) -> str:
        return Diagnosis((self,))._repr_html_()

    def __repr__(self) -> str:
        return f"Check({self.name!r}, {self.verdict!r}: {self.summary})"


@dataclass(frozen=True)
class Diagnosis:
    """A group of checks; ``worst`` is the worst verdict.

    Example:
        >>> d = Diagnosis((Check("a", "pass", "ok"), Check("b", "warn", "hm")))
        >>> d.worst, d["b"].summary
        ('warn', 'hm')
    """

    checks: tuple[Check, ...] = ()

    @property
    def worst(self) -> str:
        return max((c.verdict for c in self.checks), key=VERDICTS.index, default="pass")

    def __iter__(self):
        return iter(self.checks)

    def __len__(self) -> int:
        return len(self.checks)

    def __getitem__(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([(c.name, c.verdict, c.summary, c.fix) for c in self.checks],
                            columns=["check", "verdict", "summary", "fix"])

    def save(self, path: str | Path) -> Path:
        rows = [dataclasses.asdict(c) for c in self.checks]
        return write_bytes(Path(path), json.dumps({"checks": rows}, indent=1).encode())

    @classmethod
    def load(cls, path: str | Path) -> Diagnosis:
        return cls(tuple(Check(**c) for c in json.loads(Path(path).read_text())["checks"]))

    def __repr__(self) -> str:
        """One line per check, worst first; the figures stay in ``details`` (was one ~3,000
        character line of every field in a REPL).

        Example:
            >>> d = Diagnosis((Check("a", "pass", "ok"), Check("b", "warn", "hm", fix="x")))
            >>> print(repr(d))
            Diagnosis: 2 checks, worst warn
              warn  b: hm
                    fix: x
              pass  a: ok
        """
        lines = [f"Diagnosis: {len(self.checks)} checks, worst {self.worst}"]
        for c in sorted(self.checks, key=lambda c: -VERDICTS.index(c.verdict)):
            lines.append(f"  {c.verdict:<5} {c.name}: {c.summary}")
            if c.fix and c.verdict != "pass":
                lines.append(f"        fix: {c.fix}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colour = {"pass": "#2e7d32", "warn": "#ef6c00", "fail": "#c62828"}
        rows = "".join(f"<tr><td>{html.escape(c.name)}</td><td style='color:{colour[c.verdict]}'>"
                       f"<b>{c.verdict}</b></td><td>{html.escape(c.summary)}</td>"
                       f"<td>{html.escape(c.fix)}</td></tr>" for c in self.checks)
        return (f"<p>Diagnosis: {len(self.checks)} checks, worst <b>{self.worst}</b></p><table>"
                f"<tr><th>check</th><th>verdict</th><th>summary</th><th>fix</th></tr>{rows}</table>")
