"""``segdash serve``: the dashboard on a Bokeh server, one :class:`SegdashApp` per session."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ProjectError, SegdashError
from ..io.read import read_image
from ..project import Project, locate

log = logging.getLogger("segdash.ui")

#: Largest websocket message (bytes): bounds uploads (Bokeh's default is 20 MB).
WEBSOCKET_MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def websocket_origins(port: int, address: str | None,
                      allowed: Sequence[str] | None = None) -> list[str]:
    """Hosts whose pages may open the dashboard's websocket.

    The given ``allowed`` list if any, else this machine under its usual names and, for a
    specific (not wildcard) ``address``, that address.
    """
    if allowed:
        return list(allowed)
    origins = [f"localhost:{port}", f"127.0.0.1:{port}"]
    if address and address not in ("0.0.0.0", "::", "", "localhost", "127.0.0.1"):
        origins.append(f"{address}:{port}")
    return origins


def create_session(image: np.ndarray | None = None, image_name: str | None = None,
                   project_file: Path | None = None, root: Path | None = None,
                   scheduler: str | None = None):
    """Build the page of one browser session (its own Segmenter) and free it at the end.

    With ``project_file``, the session opens the project as the file holds it now (a
    reloaded page or a restarted server finds every stroke again)."""
    import panel as pn

    from .app import SegdashApp

    project = Project.open(project_file, root=root) if project_file is not None else None
    app = SegdashApp(image=image, image_name=image_name, project=project, scheduler=scheduler)
    pn.state.on_session_destroyed(lambda context: app.close())
    return app.template()


def _exception_handler(exc: BaseException) -> None:
    """Last resort for errors escaping a callback: a message in the page, the trace in the log."""
    import panel as pn

    from .app import user_message
    from .display import html_text

    if not isinstance(exc, SegdashError | ValueError):
        log.error("unhandled error in a callback", exc_info=exc)
    if pn.state.notifications is not None:
        pn.state.notifications.error(html_text(user_message(exc)), duration=8000)


def serve(
    image: str | Path | None = None,
    port: int = 5006,
    address: str | None = None,
    show: bool = False,
    num_threads: int | None = None,
    allow_websocket_origin: Sequence[str] | None = None,
    images: Sequence[str | Path] = (),
    project: str | Path | None = None,
    scheduler: str | None = None,
) -> int:
    """Serve the dashboard until interrupted.

    Parameters
    ----------
    image : path, optional
        Image every new session opens (default: a bundled sample). Read once, at start.
    images : sequence of path
        Image files and folders opened as one project (see :func:`segdash.project.locate`).
    project : path, optional
        The project file (default: ``segdash-project.json`` beside the images).
    scheduler : str, optional
        Address of a ``dask.distributed`` scheduler *Apply to project* runs on.
    port : int
        Port to listen on.
    address : str, optional
        Address to listen on (default: all interfaces, as Bokeh does).
    show : bool
        Open a browser tab.
    num_threads : int, optional
        Threads computing features, training and predicting, shared by all sessions
        (default: the number of cores). The event loop itself never computes.
    allow_websocket_origin : sequence of str, optional
        ``host[:port]`` values allowed to connect (see :func:`websocket_origins`).

    Returns
    -------
    int
        Exit status: 2 when the image or project cannot be read, else 0 after the server
        stops.
    """
    array, name = None, None
    project_file = root = None
    if images or project is not None:
        try:
            project_file, root, paths = locate(images, project)
            opened = Project.open(project_file, paths, root)
            if not opened.images:
                raise ProjectError(f"{project_file}: the project has no image")
        except (SegdashError, OSError) as exc:
            print(f"segdash serve: {exc}", file=sys.stderr)
            return 2
        for img in opened.images:
            if img.problem:
                print(f"segdash serve: {img.problem}", file=sys.stderr)
        print(f"segdash serve: project {project_file} ({len(opened.images)} image(s))"
              + (f"; {opened.notice}" if opened.notice else ""), flush=True)
    if image is not None:
        try:
            array = read_image(image)
        except SegdashError as exc:
            print(f"segdash serve: {exc}", file=sys.stderr)
            return 2
        array.flags.writeable = False  # shared by every session: nobody may change it
        name = Path(image).name

    import panel as pn
    from bokeh.core.validation import silence
    from bokeh.core.validation.warnings import FIXED_SIZING_MODE

    from .worker import shared_executor

    # The plot sets its frame size (frame_width/height), not its outer size: not a problem.
    silence(FIXED_SIZING_MODE, True)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s "
                                                   "%(message)s")
    shared_executor(num_threads)
    pn.config.notifications = True
    pn.config.exception_handler = _exception_handler
    pn.serve(
        lambda: create_session(array, name, project_file, root, scheduler),
        port=port,
        address=address,
        show=show,
        title="segdash",
        websocket_origin=websocket_origins(port, address, allow_websocket_origin),
        websocket_max_message_size=WEBSOCKET_MAX_MESSAGE_BYTES,
    )
    return 0
