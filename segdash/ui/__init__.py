"""The segdash dashboard (Panel + HoloViews + Bokeh): :class:`SegdashApp` and ``serve``.

Importing this package loads the dashboard libraries; ``import segdash`` alone does not.
"""

import holoviews as hv

hv.extension("bokeh", logo=False)  # the dashboard layer is the only one that loads a backend

from .app import SegdashApp  # noqa: E402  (after the backend is loaded)

__all__ = ["SegdashApp"]
