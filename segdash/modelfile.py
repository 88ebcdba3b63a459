"""Model files: skops archives holding the estimator and the metadata to rebuild features.

Never pickle: a pickle or joblib file runs code when loaded. A model file is a skops zip
archive; loading lists the types it holds *before* creating any object and refuses every
type outside an explicit trusted list: skops' defaults plus the ``trusted_types`` of the
one classifier the file names (read from the archive's schema first), never those of every
installed classifier.

A model file is untrusted input. Before anything is built from it (:func:`loads`):

1. the archive is bounded (:func:`check_archive`): file size, member count, each member's
   and the total uncompressed size, overlapping members, all from the zip's directory
   before any member is decompressed; the schema's references to array files (each array
   read at most once) and its node count;
2. the whole load below runs first in a forked child with memory, CPU and wall-clock limits
   (:mod:`segdash.sandbox`, :data:`LOAD_LIMITS`): the native parsers it involves (a
   plugin's booster reader, the estimator's own prediction on a sample) can abort,
   crash or loop only there. The child answers in JSON; nothing it sends is unpickled;
3. only when the child has loaded and validated these very bytes does this process load
   them, with the same checks: metadata bounded (class count and ids, channels, feature
   counts, settings sizes) before anything is built from it, and every tree validated
   (:func:`segdash.treewalk.check_trees`) before any walk.

This module turns a model's parts into file bytes (:func:`dumps`) and file bytes back into
validated parts (:func:`loads`); :class:`segdash.model.SegmentationModel` is built from them.
"""

from __future__ import annotations

import copy
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from . import registry, sandbox, treewalk
from ._version import __version__
from .classes import ClassInfo, classes_from_dicts
from .codes import Quantizer
from .contract import hook
from .errors import MissingPluginError, ModelFileError, PluginLoadError, UnknownNameError
from .stack import FeatureStack
from .treewalk import TreeError, check_trees

FORMAT = "segdash-model"
#: 2: the estimator is trained on uint8 feature codes; "quantizer" says how to make them
#: (every released file; format 1, float features, was never released).
FORMAT_VERSION = 2

# -- limits (bytes unless said otherwise) ---------------------------------------------------
#: Model files larger than this are refused.
MAX_MODEL_BYTES = 1_000_000_000
#: Uncompressed size of all archive members together, and of any one of them.
MAX_UNCOMPRESSED_BYTES = 1_000_000_000
MAX_MEMBER_BYTES = 512_000_000
#: The skops schema (JSON: the document's structure and every plain value).
MAX_SCHEMA_BYTES = 64_000_000
#: Members of the archive, and nodes of its schema.
MAX_MEMBERS = 200_000
MAX_SCHEMA_NODES = 2_000_000
#: Classes a model may have; class ids are 1..65535 (what a uint16 label image holds).
MAX_CLASSES = 256
MAX_CLASS_ID = 65535
#: Channels of the images a model applies to, features per pixel, feature extractors.
MAX_CHANNELS = 64
MAX_FEATURES = 4096
MAX_EXTRACTORS = 16
#: Largest working-resolution downsample factor a model may record.
MAX_DOWNSAMPLE = 1024
#: Size of one entry's settings as JSON, and of a class name (characters).
MAX_SETTINGS_BYTES = 65_536
MAX_NAME_CHARS = 200


def load_limits() -> sandbox.Limits:
    """Limits of the child process that checks a model file first.

    Memory 3 GB, CPU 120 s, wall clock 180 s by default; set by the environment variables
    ``SEGDASH_MODEL_MEMORY_MB``, ``SEGDASH_MODEL_CPU_SECONDS``, ``SEGDASH_MODEL_WALL_SECONDS``.
    """
    env = os.environ.get
    return sandbox.Limits(
        memory_bytes=int(env("SEGDASH_MODEL_MEMORY_MB", "3000")) * 1_000_000,
        cpu_seconds=int(env("SEGDASH_MODEL_CPU_SECONDS", "120")),
        wall_seconds=float(env("SEGDASH_MODEL_WALL_SECONDS", "180")),
    )


#: Modules the checking helper imports once (so each check is a fork, not a fresh Python).
_PRELOAD = ("skops.io", "sklearn.ensemble", "segdash.modelfile:_warm_up")


def _warm_up() -> None:
    """In the checking helper, once: load every installed entry (entry-point scan, plugin
    imports), which each check would otherwise repeat (about 0.5 s)."""
    registry.features.load_all()
    registry.classifiers.load_all()

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
    downsample: int = 1,
) -> dict[str, Any]:
    """The dictionary a model file holds (estimator included); ``downsample`` is the
    working resolution the model was trained at (1: full resolution)."""
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
        "downsample": int(downsample),
        "estimator": estimator,
    }


def dumps(doc: dict[str, Any]) -> bytes:
    """The bytes of a skops model file holding ``doc`` (see :func:`document`)."""
    import skops.io as sio

    return sio.dumps(doc)


def trusted_types(classifier: str | dict | None = None) -> set[str]:
    """Type names, beyond skops' defaults, that model files naming ``classifier`` may hold:
    that entry's ``trusted_types`` hook (none for None).

    Parameters
    ----------
    classifier : str, dict or None
        The classifier's registry name, or the file's classifier entry (name, distribution,
        version: the error for a missing plugin then names its package).

    Raises
    ------
    MissingPluginError
        ``classifier`` is not installed or its plugin failed to load.
    """
    if classifier is None:
        return set()
    meta = classifier if isinstance(classifier, dict) else {"name": classifier}
    entry = _entry(registry.classifiers, meta, "classifier")
    return set(hook(entry, "trusted_types"))


# -- the archive, before anything is read --------------------------------------------------

def check_archive(data: bytes) -> zipfile.ZipFile:
    """Refuse what is not a bounded zip archive, from its directory alone.

    Nothing is decompressed: sizes are those the zip's central directory declares, which
    also bound what reading a member can return (Python's zipfile stops there and fails the
    CRC check).

    Raises
    ------
    ModelFileError
        Too large, a pickle, not a zip, too many members, a member or the total too large
        once uncompressed, members sharing their bytes (an "overlapping" zip bomb), no
        ``schema.json``.
    """
    if len(data) == 0:
        raise ModelFileError("the model file is empty (0 bytes)")
    if len(data) > MAX_MODEL_BYTES:
        raise ModelFileError(f"model file too large ({len(data)} bytes; the limit is "
                             f"{MAX_MODEL_BYTES})")
    if data[:1] == b"\x80":  # every pickle of protocol 2+ starts with PROTO
        raise ModelFileError(f"this is a pickle file, not a segdash model: {_PICKLE_HINT}")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        raise ModelFileError(
            "not a segdash model file (a model file is a skops zip archive); " + _PICKLE_HINT
        ) from exc
    if len(infos) > MAX_MEMBERS:
        raise ModelFileError(f"model file refused: {len(infos)} archive members (the limit "
                             f"is {MAX_MEMBERS})")
    total = 0
    names: set[str] = set()
    spans = []
    for info in infos:
        if info.file_size > MAX_MEMBER_BYTES:
            raise ModelFileError(
                f"model file refused: member {info.filename!r} would take {info.file_size} "
                f"bytes uncompressed (the limit is {MAX_MEMBER_BYTES})")
        total += info.file_size
        if info.filename in names:
            raise ModelFileError(f"model file refused: member {info.filename!r} twice")
        names.add(info.filename)
        spans.append((info.header_offset, info.header_offset + 30 + len(info.filename)
                      + info.compress_size))
    if total > MAX_UNCOMPRESSED_BYTES:
        raise ModelFileError(
            f"model file refused: its members would take {total} bytes uncompressed (the "
            f"limit is {MAX_UNCOMPRESSED_BYTES})")
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise ModelFileError("model file refused: archive members share their bytes "
                                 "(an overlapping zip bomb)")
    if "schema.json" not in names:
        raise ModelFileError("not a segdash model file (a skops archive has a schema.json)")
    if zf.getinfo("schema.json").file_size > MAX_SCHEMA_BYTES:
        raise ModelFileError(f"model file refused: schema.json over {MAX_SCHEMA_BYTES} bytes")
    return zf


def _json_node(node: Any) -> Any:
    """The value of a skops JSON node (plain values are stored as JSON text), or None."""
    if isinstance(node, dict) and node.get("__loader__") == "JsonNode":
        try:
            return json.loads(node.get("content", "null"))
        except (TypeError, ValueError):
            return None
    return None


def read_schema(zf: zipfile.ZipFile) -> dict[str, Any]:
    """What the schema says before any object is built: the format and the classifier name.

    Also checks the schema's size in nodes and that every array file it references exists
    and is read by one node only (skops reads a file once per node: one 256 MB array
    referenced 40 times would cost 10 GB).

    Returns
    -------
    dict
        ``{"format": str or None, "classifier": str or None, "classifier_meta": {"name",
        "distribution", "version"}}``.

    Raises
    ------
    ModelFileError
        Unparsable schema, too many nodes, missing or repeated array references.
    """
    try:
        schema = json.loads(zf.read("schema.json"))
    except (ValueError, RecursionError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ModelFileError(f"model file is damaged: unreadable schema ({exc})") from exc
    members = set(zf.namelist())
    files: dict[str, Any] = {}
    count, todo = 0, [schema]
    while todo:
        node = todo.pop()
        count += 1
        if count > MAX_SCHEMA_NODES:
            raise ModelFileError(f"model file refused: over {MAX_SCHEMA_NODES} schema nodes")
        if isinstance(node, dict):
            ref = node.get("file")
            if isinstance(ref, str):
                if ref not in members:
                    raise ModelFileError(f"model file is damaged: {ref!r} is missing")
                ident = node.get("__id__")
                if files.setdefault(ref, ident) != ident:
                    raise ModelFileError(
                        f"model file refused: the array {ref!r} is referenced more than "
                        "once (a file segdash writes stores each array once)")
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    content = schema.get("content") if isinstance(schema, dict) else None
    content = content if isinstance(content, dict) else {}
    clf = content.get("classifier")
    clf_content = clf.get("content") if isinstance(clf, dict) else None
    clf_content = clf_content if isinstance(clf_content, dict) else {}
    meta = {key: _json_node(clf_content.get(key)) for key in ("name", "distribution", "version")}
    fmt = _json_node(content.get("format"))
    return {"format": fmt if isinstance(fmt, str) else None,
            "classifier": meta["name"] if isinstance(meta["name"], str) else None,
            "classifier_meta": meta}


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


def _bounded_settings(meta: dict, what: str) -> dict:
    settings = meta.get("settings") or {}
    if not isinstance(settings, dict):
        raise ModelFileError(f"model file is damaged: the {what}'s settings are not a mapping")
    try:
        size = len(json.dumps(settings, default=repr))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ModelFileError(f"model file is damaged: the {what}'s settings ({exc})") from exc
    if size > MAX_SETTINGS_BYTES:
        raise ModelFileError(f"model file refused: the {what}'s settings take {size} bytes "
                             f"(the limit is {MAX_SETTINGS_BYTES})")
    return dict(settings)


def _checked_classes(classes_raw: list, estimator: Any) -> list[ClassInfo]:
    if not 1 <= len(classes_raw) <= MAX_CLASSES:
        raise ModelFileError(f"model file refused: {len(classes_raw)} classes (1..{MAX_CLASSES} "
                             "allowed)")
    for c in classes_raw:
        if not (isinstance(c, dict) and isinstance(c.get("id"), int)
                and not isinstance(c.get("id"), bool)
                and len(str(c.get("name", ""))) <= MAX_NAME_CHARS):
            raise ModelFileError("model file is damaged: bad class entry")
    try:
        classes = classes_from_dicts(classes_raw)
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelFileError(f"model file is damaged: {exc}") from exc
    try:
        ids = np.asarray(estimator.classes_)
    except Exception as exc:
        raise ModelFileError("model file is damaged: the classifier has no class ids") from exc
    if ids.ndim != 1 or ids.size != len(classes) or ids.dtype.kind not in "iu":
        raise ModelFileError(
            f"model file is damaged: the classifier's class ids ({ids.dtype}, {ids.shape}) "
            f"do not match its {len(classes)} classes")
    # Checked before any cast: a negative id or 2**40 would otherwise wrap in uint16.
    if ids.min() < 1 or ids.max() > MAX_CLASS_ID:
        raise ModelFileError(f"model file refused: class ids must be 1..{MAX_CLASS_ID}, the "
                             f"classifier has {int(ids.min())}..{int(ids.max())}")
    if len(set(ids.tolist())) != ids.size or set(ids.tolist()) != {c.id for c in classes}:
        raise ModelFileError("model file is damaged: the classifier's class ids "
                             f"{ids.tolist()} differ from the file's classes "
                             f"{[c.id for c in classes]}")
    return classes


def _context() -> dict[str, Any]:
    """What the checking child must know of this process's registries: entries may be
    registered in-process (notebooks, tests, the plugin kit), which a child does not see."""
    trusted = {name: sorted(hook(entry, "trusted_types"))
               for name, entry in registry.classifiers.load_all().items()}
    # The limits as this process has them (an operator may have changed them here).
    limits = {name: value for name, value in globals().items() if name.startswith("MAX_")}
    trees = {name: getattr(treewalk, name) for name in _TREE_LIMITS}
    return {"features": registry.features.names(), "trusted": trusted,
            "limits": limits, "tree_limits": trees}


_TREE_LIMITS = ("MAX_TREE_DEPTH", "MAX_TREES", "MAX_TOTAL_NODES")


def _lookup(reg: registry.Registry, meta: dict, what: str, context: dict | None,
            known: list[str]) -> Any:
    """The registry entry ``meta`` names; in the checking child, None for an entry only
    the caller's process has (the caller checks it itself afterwards)."""
    if context is not None and meta.get("name") not in reg.names() and meta.get("name") in known:
        return None
    return _entry(reg, meta, what)


def _load_checked(data: bytes, context: dict | None = None,
                  sample: bool = False) -> dict[str, Any]:
    """Every check and the load itself (see :func:`loads`).

    ``context`` is None in the caller's process; in the checking child it is
    :func:`_context` of the caller, and checks that need an entry registered only in the
    caller are left to the caller's own pass.
    """
    import skops.io as sio

    zf = check_archive(data)
    schema = read_schema(zf)
    if schema["format"] is not None and schema["format"] != FORMAT:
        raise ModelFileError("not a segdash model file (a skops file of something else)")
    try:
        untrusted = set(sio.get_untrusted_types(data=data))
    except Exception as exc:
        raise ModelFileError(f"model file is damaged or not a skops archive: {exc}") from exc
    # Only the named classifier's types: a plugin trusting more cannot open other files.
    name = schema["classifier"]
    if context is not None and name in context["trusted"]:
        trusted = set(context["trusted"][name])
    else:
        trusted = trusted_types(schema["classifier_meta"] if name else None)
    refused = sorted(untrusted - trusted)
    if refused:
        raise ModelFileError(
            "model file refused: it holds types segdash does not trust (" + ", ".join(refused)
            + ")" + (f" for the classifier {name!r}" if name else "")
            + "; a model made by segdash holds only the estimator and plain metadata")
    try:
        doc = sio.loads(data, trusted=sorted(untrusted))
    except Exception as exc:
        raise ModelFileError(f"model file is damaged: {type(exc).__name__}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelFileError("not a segdash model file (a skops file of something else)")
    version = doc.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"model file format {version!r} is newer than this segdash "
            f"({__version__}) reads: upgrade segdash"
        )
    feature_metas = _require(doc, "features", list)
    clf_meta = _require(doc, "classifier", dict)
    n_channels = _require(doc, "n_channels", int)
    classes_raw = _require(doc, "classes", list)
    downsample = doc.get("downsample", 1)  # absent in files before working resolutions
    estimator = doc.get("estimator")
    # Bounds before anything is built from them (feature names are per channel).
    if isinstance(n_channels, bool) or not 1 <= n_channels <= MAX_CHANNELS:
        raise ModelFileError(f"model file refused: n_channels = {n_channels} (1..{MAX_CHANNELS} "
                             "allowed)")
    if (not isinstance(downsample, int) or isinstance(downsample, bool)
            or not 1 <= downsample <= MAX_DOWNSAMPLE):
        raise ModelFileError(f"model file refused: downsample = {downsample!r} (an integer "
                             f"1..{MAX_DOWNSAMPLE} allowed)")
    if not 1 <= len(feature_metas) <= MAX_EXTRACTORS:
        raise ModelFileError(f"model file refused: {len(feature_metas)} feature extractors "
                             f"(1..{MAX_EXTRACTORS} allowed)")
    if clf_meta.get("name") != schema["classifier"]:
        raise ModelFileError("model file is damaged: its classifier entry is unreadable")
    features_known = context["features"] if context else []
    local = []
    for meta in feature_metas:
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            raise ModelFileError("model file is damaged: bad feature entry")
        local.append(_lookup(registry.features, meta, "feature extractor", context,
                             features_known) is None)
    _lookup(registry.classifiers, clf_meta, "classifier", context,
            list(context["trusted"]) if context else [])
    settings = {m["name"]: _bounded_settings(m, f"feature extractor {m['name']!r}")
                for m in feature_metas}
    clf_settings = _bounded_settings(clf_meta, "classifier")
    stack = None
    n_in = getattr(estimator, "n_features_in_", None)
    if any(local):
        # An extractor only the caller has: the child checks the trees against the
        # classifier's own feature count, the caller against the extractors' afterwards.
        if not isinstance(n_in, int | np.integer) or not 1 <= n_in <= MAX_FEATURES:
            raise ModelFileError(f"model file refused: the classifier takes {n_in!r} features "
                                 f"(1..{MAX_FEATURES} allowed)")
        expected = int(n_in)
    else:
        try:
            stack = FeatureStack([m["name"] for m in feature_metas], settings)
            per_channel = len(stack.feature_names(1))
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelFileError(f"model file is damaged: {exc}") from exc
        if per_channel * n_channels > MAX_FEATURES:
            raise ModelFileError(f"model file refused: {per_channel * n_channels} features "
                                 f"per pixel (the limit is {MAX_FEATURES})")
        expected = len(stack.feature_names(n_channels))
    if n_in is None:
        n_in = expected
    if not (callable(getattr(estimator, "predict_proba", None))
            and hasattr(estimator, "classes_")):
        raise ModelFileError("model file is damaged: it holds no fitted classifier")
    classes = _checked_classes(classes_raw, estimator)
    if n_in != expected:
        raise ModelFileError(
            f"model file is inconsistent: the classifier expects {n_in} features but its "
            f"feature settings make {expected} (was a plugin upgraded?)"
        )
    try:
        check_trees(estimator, expected)
    except TreeError as exc:
        raise ModelFileError(f"model file refused: its trees are unsafe to use: {exc}") from exc
    try:
        quantizer = Quantizer.from_dict(_require(doc, "quantizer", dict))
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelFileError(f"model file is damaged: bad quantizer ({exc})") from exc
    if len(quantizer) != expected:
        raise ModelFileError(
            f"model file is inconsistent: its quantizer codes {len(quantizer)} features "
            f"but its feature settings make {expected}"
        )
    if sample:
        # The estimator's own (native) prediction on a few codes: a model that crashes or
        # hangs there does so in the checking child, not in the caller.
        codes = np.random.default_rng(0).integers(0, 256, (64, expected)).astype(np.float32)
        est = estimator
        if getattr(est, "n_jobs", 1) not in (1, None):  # 64 rows: no thread pool (0.5 s)
            est = copy.copy(est)
            est.n_jobs = 1
        try:
            proba = np.asarray(est.predict_proba(codes))
        except Exception as exc:
            raise ModelFileError(f"model file is damaged: its classifier cannot predict "
                                 f"({type(exc).__name__}: {exc})") from exc
        if proba.shape != (64, len(classes)) or not np.all(np.isfinite(proba)):
            raise ModelFileError("model file is damaged: its classifier predicts "
                                 f"{proba.shape} or non-finite probabilities")
    return {
        "estimator": estimator, "stack": stack, "classifier": clf_meta["name"],
        "classifier_params": clf_settings, "n_channels": n_channels,
        "classes": classes, "quantizer": quantizer, "downsample": downsample,
        "meta": {k: doc.get(k) for k in ("segdash_version", "format_version")},
    }


def _check_isolated(payload: bytes) -> dict[str, Any]:
    """In the checking child: the whole load and a sample prediction; a JSON summary.

    ``payload``: 8 bytes of length, the caller's :func:`_context` as JSON, the file."""
    n = int.from_bytes(payload[:8], "little")
    context = json.loads(payload[8:8 + n])
    # This process is a throw-away fork: take the caller's limits as its own.
    globals().update({k: int(v) for k, v in context["limits"].items() if k in globals()})
    for name in _TREE_LIMITS:
        setattr(treewalk, name, int(context["tree_limits"][name]))
    parts = _load_checked(payload[8 + n:], context, sample=True)
    return {"classifier": parts["classifier"], "classes": [c.id for c in parts["classes"]]}


def start_checker() -> None:
    """Start the process that checks model files (3-5 s of imports), so that the first
    upload does not wait for it: a server may call this when it starts."""
    sandbox.run_isolated("segdash.sandbox:ping", b"", load_limits(), preload=_PRELOAD)


_ERRORS = {"ModelFileError": ModelFileError, "MissingPluginError": MissingPluginError}


def _isolated_check(data: bytes) -> None:
    """Run :func:`_check_isolated` in a limited child; raise what it found or how it died."""
    limits = load_limits()
    try:
        context = json.dumps(_context()).encode()
        payload = (len(context).to_bytes(8, "little"), context, data)
        reply = sandbox.run_isolated("segdash.modelfile:_check_isolated", payload, limits,
                                     preload=_PRELOAD)
    except sandbox.IsolatedFailure as exc:
        raise ModelFileError(
            f"model file refused: loading it in an isolated process {exc} (limits: "
            f"{limits.memory_bytes // 1_000_000} MB, {limits.cpu_seconds} s CPU, "
            f"{limits.wall_seconds:g} s); it is damaged or built to harm") from exc
    if reply["ok"]:
        return
    error, message = str(reply.get("error")), str(reply.get("message"))
    if error in _ERRORS:
        raise _ERRORS[error](message)
    if error == "MemoryError":
        raise ModelFileError(f"model file refused: loading it needs more than "
                             f"{limits.memory_bytes // 1_000_000} MB (SEGDASH_MODEL_MEMORY_MB)")
    raise ModelFileError(f"model file is damaged: {error}: {message}")


def loads(data: bytes) -> dict[str, Any]:
    """Read and check the bytes of a model file, executing nothing in them.

    The archive's bounds are checked here first; then the whole load runs in a limited
    child process (see the module's docstring), and only then here.

    Returns
    -------
    dict
        The model's parts, the keyword arguments of
        :class:`segdash.model.SegmentationModel`: ``estimator``, ``stack``, ``classifier``,
        ``classifier_params``, ``n_channels``, ``classes``, ``quantizer``, ``meta``.

    Raises
    ------
    ModelFileError
        Not a skops archive (pickle/joblib included), damaged, over a limit, holding
        untrusted types, unsafe trees, not a segdash model, or the checking child crashed
        or ran out of time or memory.
    MissingPluginError
        The model needs a feature extractor or classifier that is not installed.
    """
    data = bytes(data)
    check_archive(data)
    _isolated_check(data)
    return _load_checked(data)


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
