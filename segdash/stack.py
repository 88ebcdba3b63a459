"""Per-pixel features: one or several registered extractors, concatenated.

:class:`FeatureStack` is the one way segdash turns an image into features and feature codes:
it resolves extractor names through :data:`segdash.registry.features`, applies their
settings, runs them on the prepared image and concatenates their outputs along the last
axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import registry
from .codes import Quantizer, channel_range, sample_grid
from .contract import check_output, hook, prepare_image, settings_of


def _split_params(names: list[str], params: Mapping[str, Any] | None) -> dict[str, dict]:
    """Per-extractor settings from the user's ``feature_params``.

    With one extractor, ``params`` holds its settings directly; with several it maps each
    extractor name to its settings.
    """
    params = dict(params or {})
    if len(names) == 1 and not (set(params) and set(params) <= set(names)):
        return {names[0]: params}
    unknown = set(params) - set(names)
    if unknown:
        raise ValueError(
            f"feature_params has keys {sorted(unknown)} that are not among the selected "
            f"feature extractors {names}; with several extractors, give "
            "{extractor_name: {setting: value}}"
        )
    return {n: dict(params.get(n, {})) for n in names}


class FeatureStack:
    """Several feature extractors applied to one image, their features concatenated.

    Parameters
    ----------
    names : str or sequence of str
        Registered feature extractor name(s), e.g. ``"basic"`` or ``["basic", "texture"]``.
    feature_params : mapping, optional
        Settings: ``{setting: value}`` for a single extractor, or
        ``{name: {setting: value}}`` for several.

    Raises
    ------
    UnknownNameError
        A name is not registered (the message lists the available ones).
    ValueError
        A setting does not exist or has an invalid value.
    """

    def __init__(
        self,
        names: str | Sequence[str] = "basic",
        feature_params: Mapping[str, Any] | None = None,
    ) -> None:
        names = [names] if isinstance(names, str) else list(names)
        if not names:
            raise ValueError("select at least one feature extractor")
        if len(set(names)) != len(names):
            raise ValueError(f"feature extractors selected more than once: {names}")
        per = _split_params(names, feature_params)
        self.extractors: list[tuple[str, Any]] = []
        for name in names:
            cls = registry.features.get(name)
            settings = per[name]
            unknown = set(settings) - (set(cls.param) - {"name"})
            if unknown:
                valid = sorted(set(cls.param) - {"name"})
                raise ValueError(
                    f"feature extractor {name!r} has no setting(s) {sorted(unknown)}; "
                    f"its settings are {valid}"
                )
            self.extractors.append((name, cls(**settings)))

    @classmethod
    def from_objects(cls, extractors: Sequence[tuple[str, Any]]) -> FeatureStack:
        """A stack over ready settings objects ``[(name, extractor), ...]`` (no copies)."""
        self = cls.__new__(cls)
        self.extractors = list(extractors)
        return self

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.extractors]

    @property
    def settings(self) -> dict[str, dict[str, Any]]:
        """``{extractor name: {setting: value}}``."""
        return {n: settings_of(e) for n, e in self.extractors}

    @property
    def halo(self) -> int:
        """Largest context, in pixels on each side, any feature of the stack depends on."""
        return max(int(e.halo) for _, e in self.extractors)

    def feature_names(self, n_channels: int) -> list[str]:
        """Names of all features, prefixed by the extractor name when there are several."""
        if len(self.extractors) == 1:
            return list(self.extractors[0][1].feature_names(n_channels))
        return [
            f"{n}: {f}" for n, e in self.extractors for f in e.feature_names(n_channels)
        ]

    def feature_groups(self, n_channels: int) -> list[tuple[str, str, float | None]]:
        """``(extractor, family, sigma)`` of every feature, in feature order (each
        extractor's ``feature_groups`` hook, :mod:`segdash.contract`); sigma in pixels, or
        None for a feature without a scale.

        Raises
        ------
        ValueError
            An extractor's ``feature_groups`` does not give one group per feature.
        """
        # asked on every fit (the classifier's feature_repeats): names cost ~2 ms a call
        key = (self.key(), int(n_channels))
        cached = getattr(self, "_groups", None)
        if cached is not None and cached[0] == key:
            return list(cached[1])
        out: list[tuple[str, str, float | None]] = []
        for name, ext in self.extractors:
            groups = hook(ext, "feature_groups")(n_channels)
            n = len(ext.feature_names(n_channels))
            if len(groups) != n:
                raise ValueError(f"feature extractor {name!r}: feature_groups gives "
                                 f"{len(groups)} groups for {n} features")
            out += [(name, str(fam), None if s is None else float(s)) for fam, s in groups]
        self._groups = (key, out)
        return list(out)

    @property
    def code_bytes(self) -> int:
        """Bytes per feature and pixel computing the codes takes at its peak (the largest
        of the extractors' ``code_bytes``)."""
        return max(int(hook(e, "code_bytes")) for _, e in self.extractors)

    def key(self) -> tuple:
        """Hashable summary of names and settings (for caching features)."""
        return tuple(
            (n, tuple(sorted((k, repr(v)) for k, v in settings_of(e).items())))
            for n, e in self.extractors
        )

    def codes(
        self, image: Any, quantizer: Quantizer | None = None,
        context: tuple[int, int] = (0, 0),
    ) -> tuple[np.ndarray, Quantizer]:
        """uint8 feature codes of ``image``, and the quantizer that made them.

        Parameters
        ----------
        image : array_like
            ``(H, W)`` or ``(H, W, C)`` image of any integer or float dtype.
        quantizer : Quantizer, optional
            The codes to use (a model's); by default one is made for this image: from each
            extractor's ``quantizer(channel_low, channel_span)`` hook over the image's
            channel ranges (the built-in ``basic``), or linearly over the range of its
            features on this image (the hook's default, None).
        context : (int, int)
            ``(cy, cx)``: ``image`` is a tile holding this many rows (columns) of its
            neighbours on each side, 0 or at least :attr:`halo` (tiling); the codes are
            those of ``image[cy:H - cy, cx:W - cx]``, computed by each extractor's
            ``compute_codes_inner`` hook. Needs ``quantizer``.

        Returns
        -------
        codes : numpy.ndarray
            ``(H - 2 cy, W - 2 cx, F)`` uint8, ``quantizer(self(image))``, computed without
            holding the float32 features where the extractor allows.
        quantizer : Quantizer
        """
        img = prepare_image(image)
        n_ch = img.shape[2]
        sizes = [len(e.feature_names(n_ch)) for _, e in self.extractors]
        if quantizer is not None and len(quantizer) != sum(sizes):
            raise ValueError(
                f"the quantizer codes {len(quantizer)} features but these feature settings "
                f"make {sum(sizes)}"
            )
        cy, cx = (int(v) for v in context)
        if (cy or cx) and quantizer is None:
            raise ValueError("codes of a tile with context need the model's quantizer")
        for v in (cy, cx):
            if 0 < v < self.halo:
                raise ValueError(f"context of {v} pixels is less than the features' halo "
                                 f"({self.halo}): give 0 or at least the halo")
        inner = (img.shape[0] - 2 * cy, img.shape[1] - 2 * cx)
        single = len(self.extractors) == 1
        out = None if single else np.empty((*inner, sum(sizes)), np.uint8)
        ranges = channel_range(img) if quantizer is None else None
        parts = []
        start = 0
        for (name, ext), size in zip(self.extractors, sizes, strict=True):
            q = quantizer.subset(start, start + size) if quantizer is not None else None
            if q is None:
                q = hook(ext, "quantizer")(*ranges)
            if q is None:  # no coding of its own: linear over this image's feature range
                feats = check_output(name, ext, img)
                q = Quantizer.from_sample(sample_grid(feats).reshape(-1, size))
                part = q(feats)
                del feats
            elif cy or cx:
                part = hook(ext, "compute_codes_inner")(img, q, (cy, cx))
            else:
                part = hook(ext, "compute_codes")(img, q)
            if single:
                out = part
            else:
                out[:, :, start:start + size] = part
            del part
            parts.append(q)
            start += size
        return out, (quantizer if quantizer is not None else Quantizer.concatenate(parts))

    def __call__(self, image: Any) -> np.ndarray:
        """Features of ``image``.

        Parameters
        ----------
        image : array_like
            ``(H, W)`` or ``(H, W, C)`` image of any integer or float dtype.

        Returns
        -------
        numpy.ndarray
            ``(H, W, F)`` float32, F = ``len(self.feature_names(C))``.
        """
        img = prepare_image(image)
        outs = [check_output(n, e, img) for n, e in self.extractors]
        if len(outs) == 1:
            return outs[0]
        return np.concatenate(outs, axis=2)
