"""``segdash plugins``: what is installed, where it comes from, and what failed to load.

:func:`collect` loads every registered feature extractor and classifier (so broken plugins
show up) and returns a :class:`PluginReport`; :func:`format_report` renders it as text;
:func:`run_cli` is the command (exit status 1 only with ``--check`` and a failure).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass, field
from typing import TextIO

from . import registry as _registry
from ._version import __version__


@dataclass(frozen=True)
class EntryStatus:
    """One registry entry and whether it loaded.

    Attributes
    ----------
    kind : str
        ``"feature extractor"`` or ``"classifier"``.
    name : str
        Name users select.
    value : str
        ``module:attr`` of the entry point (``<registered>`` for in-process entries).
    distribution, version : str or None
        The installed distribution that declares it.
    error : str or None
        Why it failed to import or validate; None when it loaded.
    """

    kind: str
    name: str
    value: str
    distribution: str | None
    version: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def source(self) -> str:
        if self.distribution is None:
            return "registered in-process"
        return f"{self.distribution} {self.version}"


@dataclass
class PluginReport:
    """Every feature extractor and classifier, failures and discovery warnings."""

    entries: list[EntryStatus] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[EntryStatus]:
        return [e for e in self.entries if not e.ok]

    def of_kind(self, kind: str) -> list[EntryStatus]:
        return [e for e in self.entries if e.kind == kind]


def _entries(reg: _registry.Registry) -> list[EntryStatus]:
    reg.load_all()
    errors = {err.name: err for err in reg.errors}
    out = []
    for name in reg.names():
        info = reg.info(name)
        err = errors.get(name)
        out.append(EntryStatus(
            kind=reg.kind, name=name, value=info.value, distribution=info.distribution,
            version=info.version,
            error=None if err is None else f"{type(err.exception).__name__}: {err.exception}",
        ))
    return out


def collect(
    features: _registry.Registry | None = None,
    classifiers: _registry.Registry | None = None,
) -> PluginReport:
    """Load every entry of both registries and report each one's origin and status.

    Parameters
    ----------
    features, classifiers : Registry, optional
        Registries to inspect (default: :data:`segdash.registry.features` and
        :data:`segdash.registry.classifiers`).

    Returns
    -------
    PluginReport
    """
    report = PluginReport()
    for reg in (features or _registry.features, classifiers or _registry.classifiers):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report.entries += _entries(reg)
        report.warnings += [str(w.message) for w in caught]
    return report


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def format_report(report: PluginReport) -> str:
    """The report as the text ``segdash plugins`` prints."""
    lines = [f"segdash {__version__}"]
    for kind, title, group in (
        ("feature extractor", "Feature extractors", _registry.FEATURES_GROUP),
        ("classifier", "Classifiers", _registry.CLASSIFIERS_GROUP),
    ):
        entries = report.of_kind(kind)
        lines += ["", f"{title} (entry-point group {group}):"]
        if not entries:
            lines.append("  none")
            continue
        lines += _table([("name", "status", "distribution", "entry point")] + [
            (e.name, "ok" if e.ok else "FAILED", e.source, e.value) for e in entries
        ])
    failed = report.failed
    lines += ["", f"Failed to load: {len(failed) or 'none'}"]
    for e in failed:
        lines.append(f"  {e.kind} {e.name!r} ({e.value}, from {e.source}): {e.error}")
    if report.warnings:
        lines += ["", "Warnings:"] + [f"  {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"


def run_cli(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the report; return 1 when ``args.check`` is set and a plugin failed, else 0."""
    report = collect()
    (out or sys.stdout).write(format_report(report))
    if getattr(args, "check", False) and report.failed:
        (out or sys.stdout).write(
            f"\n--check: {len(report.failed)} plugin(s) failed to load\n")
        return 1
    return 0
