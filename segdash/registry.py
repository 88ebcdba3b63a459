"""Discovery of feature extractors and classifiers through entry points.

segdash's own built-ins are declared as entry points in segdash's pyproject.toml, in the
same groups as third-party plugins (``segdash.features`` and ``segdash.classifiers``), so
both travel one path: :func:`importlib.metadata.entry_points` lists them, :meth:`Registry.get`
imports, validates (with :mod:`segdash.contract`) and caches one on first use.

Listing names imports nothing. A plugin that fails to import or validate is recorded in
:attr:`Registry.errors` and never raises out of listing or of loading the others.
"""

from __future__ import annotations

import importlib.metadata as im
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .contract import validate_classifier, validate_feature_extractor
from .errors import PluginLoadError, UnknownNameError

FEATURES_GROUP = "segdash.features"
CLASSIFIERS_GROUP = "segdash.classifiers"

#: Distribution name of segdash itself: its entries win name clashes.
_OWN_DIST = "segdash"


@dataclass(frozen=True)
class PluginInfo:
    """Where a registry entry comes from.

    Attributes
    ----------
    name : str
        Name the entry is registered under (what users select).
    value : str
        ``"module:attr"`` for an entry point, ``"<registered>"`` for :meth:`Registry.register`.
    distribution : str or None
        Name of the installed distribution declaring it (None when registered in-process).
    version : str or None
        Version of that distribution.
    """

    name: str
    value: str
    distribution: str | None = None
    version: str | None = None

    @property
    def source(self) -> str:
        if self.distribution is None:
            return "registered in-process"
        return f"{self.distribution} {self.version}"


@dataclass(frozen=True)
class PluginError:
    """A plugin that failed to load or validate.

    Attributes
    ----------
    info : PluginInfo
        Name, distribution and version of the failing entry.
    exception : BaseException
        What was raised while importing or validating it.
    """

    info: PluginInfo
    exception: BaseException

    @property
    def name(self) -> str:
        return self.info.name

    def __str__(self) -> str:
        return (
            f"plugin {self.info.name!r} ({self.info.value}, from {self.info.source}) failed "
            f"to load: {type(self.exception).__name__}: {self.exception}"
        )


def _dist_of(ep: im.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    try:
        return dist.metadata["Name"], dist.version
    except Exception:  # broken metadata must not break listing
        return None, None


class Registry:
    """Named feature extractors or classifiers from one entry-point group.

    Parameters
    ----------
    group : str
        Entry-point group, e.g. ``"segdash.features"``.
    kind : str
        Human name of what is registered ("feature extractor", "classifier"), for messages.
    validate : callable
        Called with each loaded object; raises (any exception) when the object does not
        follow the contract. Its return value is what :meth:`get` hands out.
    discover : callable, optional
        Returns the entry points of ``group``. Defaults to
        ``importlib.metadata.entry_points(group=group)``; tests pass their own.
    """

    def __init__(
        self,
        group: str,
        kind: str,
        validate: Callable[[Any], Any],
        discover: Callable[[], Iterable[im.EntryPoint]] | None = None,
    ) -> None:
        self.group = group
        self.kind = kind
        self._validate = validate
        self._discover = discover or (lambda: im.entry_points(group=group))
        self._lock = threading.RLock()
        self._entry_points: dict[str, tuple[PluginInfo, im.EntryPoint]] | None = None
        self._registered: dict[str, tuple[PluginInfo, Any]] = {}
        self._loaded: dict[str, Any] = {}
        self._errors: dict[str, PluginError] = {}

    # -- discovery -------------------------------------------------------------------------

    def _scan(self) -> dict[str, tuple[PluginInfo, im.EntryPoint]]:
        with self._lock:
            if self._entry_points is not None:
                return self._entry_points
            found: dict[str, list[tuple[PluginInfo, im.EntryPoint]]] = {}
            for ep in self._discover():
                dist, version = _dist_of(ep)
                info = PluginInfo(ep.name, ep.value, dist, version)
                found.setdefault(ep.name, []).append((info, ep))
            chosen = {}
            for name, candidates in found.items():
                # Deterministic: segdash's own first, then by distribution name and value.
                candidates.sort(
                    key=lambda c: (c[0].distribution != _OWN_DIST, c[0].distribution or "",
                                   c[0].value)
                )
                # The same distribution found twice (e.g. two paths on sys.path) is no clash.
                distinct = {(c[0].distribution, c[0].value) for c in candidates}
                if len(distinct) > 1:
                    others = ", ".join(f"{c[0].value} ({c[0].source})" for c in candidates[1:])
                    warnings.warn(
                        f"{self.kind} name {name!r} is declared more than once; using "
                        f"{candidates[0][0].value} ({candidates[0][0].source}), ignoring {others}",
                        stacklevel=3,
                    )
                chosen[name] = candidates[0]
            self._entry_points = chosen
            return chosen

    def refresh(self) -> None:
        """Forget discovered and loaded entries (after installing a plugin, or in tests).

        Entries added with :meth:`register` are kept.
        """
        with self._lock:
            self._entry_points = None
            self._loaded.clear()
            self._errors.clear()

    # -- public API ------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Sorted names of every entry, without importing any plugin."""
        return sorted(set(self._scan()) | set(self._registered))

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self):
        return iter(self.names())

    def info(self, name: str) -> PluginInfo:
        """Where entry ``name`` comes from (distribution and version), without importing it."""
        if name in self._registered:
            return self._registered[name][0]
        eps = self._scan()
        if name in eps:
            return eps[name][0]
        raise self._unknown(name)

    def get(self, name: str) -> Any:
        """Load, validate and cache entry ``name``.

        Raises
        ------
        UnknownNameError
            ``name`` is not registered (the message lists the available names).
        PluginLoadError
            The plugin failed to import or validate (also recorded in :attr:`errors`).
        """
        with self._lock:
            if name in self._registered:
                return self._registered[name][1]
            if name in self._loaded:
                return self._loaded[name]
            if name in self._errors:
                raise PluginLoadError(str(self._errors[name])) from self._errors[name].exception
            eps = self._scan()
            if name not in eps:
                raise self._unknown(name)
            info, ep = eps[name]
            try:
                obj = self._validate(ep.load())
            except Exception as exc:  # any plugin bug is recorded, never propagated raw
                err = PluginError(info, exc)
                self._errors[name] = err
                raise PluginLoadError(str(err)) from exc
            self._loaded[name] = obj
            return obj

    def load_all(self) -> dict[str, Any]:
        """Load every entry; failures land in :attr:`errors`. Returns ``{name: object}``."""
        out = {}
        for name in self.names():
            try:
                out[name] = self.get(name)
            except PluginLoadError:
                pass
        return out

    def register(self, name: str, obj: Any, overwrite: bool = False) -> None:
        """Add an entry in-process (notebooks, tests).

        Parameters
        ----------
        name : str
            Name to register under.
        obj : object
            The feature extractor class or classifier class; validated now.
        overwrite : bool
            Replace an existing entry of that name instead of raising.

        Raises
        ------
        ValueError
            ``name`` exists and ``overwrite`` is False.
        """
        with self._lock:
            if not overwrite and name in self.names():
                raise ValueError(
                    f"a {self.kind} named {name!r} is already registered "
                    f"({self.info(name).source}); pass overwrite=True to replace it"
                )
            checked = self._validate(obj)
            self._registered[name] = (PluginInfo(name, "<registered>"), checked)
            self._loaded.pop(name, None)
            self._errors.pop(name, None)

    def unregister(self, name: str) -> None:
        """Remove an entry added with :meth:`register`."""
        with self._lock:
            self._registered.pop(name, None)

    @property
    def errors(self) -> list[PluginError]:
        """Plugins that failed to import or validate so far (load them with :meth:`load_all`)."""
        return list(self._errors.values())

    def _unknown(self, name: str) -> UnknownNameError:
        available = ", ".join(self.names()) or "none"
        return UnknownNameError(
            f"unknown {self.kind} {name!r}; available: {available}"
        )

    def __repr__(self) -> str:
        return f"Registry({self.group!r}, names={self.names()})"


features = Registry(FEATURES_GROUP, "feature extractor", validate_feature_extractor)
classifiers = Registry(CLASSIFIERS_GROUP, "classifier", validate_classifier)
