"""Exceptions segdash raises for user errors: each message says what is wrong and what to do."""

from __future__ import annotations


class SegdashError(Exception):
    """Base class of segdash's own errors (safe to show to a user as they are)."""


class UnknownNameError(SegdashError, ValueError):
    """A feature extractor or classifier name that no registry entry has."""


class PluginLoadError(SegdashError, RuntimeError):
    """A plugin failed to import or does not follow segdash's contract."""


class ModelFileError(SegdashError, ValueError):
    """A model file that is not a segdash model, is damaged, or holds untrusted types."""


class MissingPluginError(ModelFileError):
    """A model file needs a feature extractor or classifier that is not installed."""


class ImageError(SegdashError, ValueError):
    """An image that cannot be read or does not fit (format, size, channels)."""


class ProjectError(SegdashError, ValueError):
    """A project file that cannot be read or written: malformed, too large, naming a path
    outside its folder, or an image that changed on disk."""


class ProjectConflictError(ProjectError):
    """Another session wrote the project file since this one read it (its revision moved)."""
