"""Model files: skops archives holding the estimator and the metadata to rebuild features.

Never pickle: a pickle or joblib file runs code when loaded. A model file is a skops zip
archive; loading lists the types it holds *before* creating any object and refuses every
type outside an explicit trusted list (skops' defaults plus what installed classifier
entries declare in their ``trusted_types`` hook).

This module turns a model's parts into file bytes (:func:`dumps`) and file bytes back into
validated parts (:func:`loads`); :class:`segdash.model.SegmentationModel` is built from them.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

from . import registry
from ._version import __version__
from .classes import ClassInfo, classes_from_dicts
from .codes import Quantizer
from .contract import hook
from .errors import MissingPluginError, ModelFileError, PluginLoadError, UnknownNameError
from .stack import FeatureStack

FORMAT = "segdash-model"
#: 2: the estimator is trained on uint8 feature codes; "quantizer" says how to make them
#: (every released file; format 1, float features, was never released).
FORMAT_VERSION = 2
#: Model files larger than this are refused (bytes).
MAX_MODEL_BYTES = 1_000_000_000

_PICKLE_HINT = (
    "pickle and joblib files are refused because loading them runs code; save models with "
    "segdash (SegmentationModel.save) or download them from the dashboard"
)


def _entry_meta(reg: registry.Registry, name: str, settings: dict) -> dict[str, Any]:
    info = reg.info(name)
    return {"name": name, "settings": dict(settings),
            "distribution": info.distribution, "version": info.version}


def document(
    estimator: Any,
    stack: FeatureStack,
    classifier: str,
    classifier_params: dict[str, Any],
    n_channels: int,
    classes: list[ClassInfo],
    quantizer: Quantizer,
) -> dict[str, Any]:
    """The dictionary a model file holds (estimator included)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "segdash_version": __version__,
        "features": [
            _entry_meta(registry.features, name, settings)
            for name, settings in stack.settings.items()
        ],
        "classifier": _entry_meta(registry.classifiers, classifier, classifier_params),
        "classes": [c.to_dict() for c in classes],
        "n_channels": int(n_channels),
        "feature_names": stack.feature_names(n_channels),
        "quantizer": quantizer.to_dict(),
        "estimator": estimator,
    }


def dumps(doc: dict[str, Any]) -> bytes:
    """The bytes of a skops model file holding ``doc`` (see :func:`document`)."""
    import skops.io as sio

    return sio.dumps(doc)


def trusted_types() -> set[str]:
    """Type names, beyond skops' defaults, that installed classifiers declare they need."""
    out: set[str] = set()
    for entry in registry.classifiers.load_all().values():
        out.update(hook(entry, "trusted_types"))
    return out


def _require(doc: dict, key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in doc or not isinstance(doc[key], kind):
        raise ModelFileError(f"model file is damaged: {key!r} missing or of the wrong type")
    return doc[key]


def _entry(reg: registry.Registry, meta: dict, what: str) -> Any:
    name = meta.get("name")
    try:
        return reg.get(name)
    except UnknownNameError as exc:
        dist = meta.get("distribution")
        hint = (f"install the plugin package {dist!r} (version {meta.get('version')} made it)"
                if dist and dist != "segdash" else "install the plugin that provides it")
        raise MissingPluginError(
            f"this model needs the {what} {name!r}, which is not installed: {hint}. "
            f"Installed: {', '.join(reg.names()) or 'none'}"
        ) from exc
    except PluginLoadError as exc:
        raise MissingPluginError(
            f"this model needs the {what} {name!r}, whose plugin failed to load: {exc}"
        ) from exc


def loads(data: bytes) -> dict[str, Any]:
    """Read and check the bytes of a model file, executing nothing in them.

    Returns
    -------
    dict
        The model's parts, the keyword arguments of
        :class:`segdash.model.SegmentationModel`: ``estimator``, ``stack``, ``classifier``,
        ``classifier_params``, ``n_channels``, ``classes``, ``quantizer``, ``meta``.

    Raises
    ------
    ModelFileError
        Not a skops archive (pickle/joblib included), damaged, holding untrusted types, or
        not a segdash model.
    MissingPluginError
        The model needs a feature extractor or classifier that is not installed.
    """
    import skops.io as sio

    if len(data) > MAX_MODEL_BYTES:
        raise ModelFileError(f"model file too large ({len(data)} bytes)")
    if data[:1] == b"\x80":  # every pickle of protocol 2+ starts with PROTO
        raise ModelFileError(f"this is a pickle file, not a segdash model: {_PICKLE_HINT}")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise ModelFileError(
            "not a segdash model file (a model file is a skops zip archive); " + _PICKLE_HINT
        )
    try:
        untrusted = set(sio.get_untrusted_types(data=data))
    except Exception as exc:
        raise ModelFileError(f"model file is damaged or not a skops archive: {exc}") from exc
    refused = sorted(untrusted - trusted_types())
    if refused:
        raise ModelFileError(
            "model file refused: it holds types segdash does not trust (" + ", ".join(refused)
            + "); a model made by segdash holds only the estimator and plain metadata"
        )
    try:
        doc = sio.loads(data, trusted=sorted(untrusted))
    except Exception as exc:
        raise ModelFileError(f"model file is damaged: {type(exc).__name__}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelFileError("not a segdash model file (a skops file of something else)")
    if doc.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFileError(
            f"model file format {doc.get('format_version')} is newer than this segdash "
            f"({__version__}) reads: upgrade segdash"
        )
    feature_metas = _require(doc, "features", list)
    clf_meta = _require(doc, "classifier", dict)
    n_channels = _require(doc, "n_channels", int)
    classes_raw = _require(doc, "classes", list)
    estimator = doc.get("estimator")

    for meta in feature_metas:
        if not isinstance(meta, dict):
            raise ModelFileError("model file is damaged: bad feature entry")
        _entry(registry.features, meta, "feature extractor")
    _entry(registry.classifiers, clf_meta, "classifier")
    try:
        stack = FeatureStack(
            [m["name"] for m in feature_metas],
            {m["name"]: dict(m.get("settings") or {}) for m in feature_metas},
        )
        classes = classes_from_dicts(classes_raw)
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelFileError(f"model file is damaged: {exc}") from exc
    if not (callable(getattr(estimator, "predict_proba", None))
            and hasattr(estimator, "classes_")):
        raise ModelFileError("model file is damaged: it holds no fitted classifier")
    expected = len(stack.feature_names(n_channels))
    n_in = getattr(estimator, "n_features_in_", expected)
    if n_in != expected:
        raise ModelFileError(
            f"model file is inconsistent: the classifier expects {n_in} features but its "
            f"feature settings make {expected} (was a plugin upgraded?)"
        )
    try:
        quantizer = Quantizer.from_dict(_require(doc, "quantizer", dict))
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelFileError(f"model file is damaged: bad quantizer ({exc})") from exc
    if len(quantizer) != expected:
        raise ModelFileError(
            f"model file is inconsistent: its quantizer codes {len(quantizer)} features "
            f"but its feature settings make {expected}"
        )
    return {
        "estimator": estimator, "stack": stack, "classifier": clf_meta["name"],
        "classifier_params": dict(clf_meta.get("settings") or {}), "n_channels": n_channels,
        "classes": classes, "quantizer": quantizer,
        "meta": {k: doc.get(k) for k in ("segdash_version", "format_version")},
    }


def read(path: str | Path) -> dict[str, Any]:
    """:func:`loads` of the file at ``path``, refused before reading when too large.

    Raises
    ------
    ModelFileError
        Refused or damaged file (see :func:`loads`); MissingPluginError when a plugin the
        model needs is not installed.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ModelFileError(f"model file too large ({size} bytes)")
    return loads(path.read_bytes())
