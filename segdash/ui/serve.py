"""``segdash serve``: ``panel serve`` of :mod:`segdash.ui.panel_app`, with safe defaults.

The dashboard is a Panel app file shipped in the package (:data:`APP_FILE`); ``panel serve``
serves it as any Panel app, one :class:`~segdash.ui.SegdashApp` per browser session.
``segdash serve`` is Panel's own ``serve`` command (:class:`SegdashServe` subclasses it):
every ``panel serve`` option works (``--basic-auth``, ``--cookie-secret``,
``--oauth-provider``, ``--num-procs``, ``--prefix``, ``--admin``,
``--unused-session-lifetime``, ...), plus segdash's own (an image, or images and folders
opened as a project with ``--project``, ``--scheduler``, ``--num-threads``,
``--session-memory-gb``, ``--job-time-limit``, ``--max-upload-gb``, ``--upload-dir``), and
it changes three defaults:

- session ids are signed (``--session-ids signed``) with ``BOKEH_SECRET_KEY``, or a key
  generated at start, so a browser cannot choose (and so join) another session's id;
- the ``Host`` header of every HTTP and websocket request must be one of the allowed hosts
  (``--allow-websocket-origin``, default this machine), as Bokeh already requires of the
  ``Origin``: a page served from another name that resolves here (DNS rebinding) is
  refused;
- websocket messages are bounded by :data:`WEBSOCKET_MAX_MESSAGE_BYTES` (uploads arrive in
  chunks of :data:`~segdash.ui.upload.CHUNK_BYTES`, each a message of its own, streamed
  to disk: the file size limit is ``--max-upload-gb``, checked in the browser before
  anything is sent).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import logging
import os
import re
import sys
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ProjectError, SegdashError
from ..io.pyramid import Pyramid, is_large, is_zarr, open_large, pyramid_of
from ..io.read import read_image
from ..project import Project, locate, write_atomic
from .upload import DEFAULT_MAX_UPLOAD_GB

log = logging.getLogger("segdash.ui")

#: The Panel app file: ``panel serve`` it, or run ``segdash serve``.
APP_FILE = str(Path(__file__).with_name("panel_app.py"))
#: Largest websocket message (bytes): an upload chunk (10 MB) and its framing fit, a
#: client cannot make the server buffer more than this at once (Bokeh's default is 20 MB).
WEBSOCKET_MAX_MESSAGE_BYTES = 32 * 1024 * 1024
#: What a chunk's websocket message adds to its bytes (Bokeh's header and event), generously.
MESSAGE_OVERHEAD_BYTES = 1_000_000
#: Default memory budget of one session, GB (features of one image and its results).
DEFAULT_SESSION_MEMORY_GB = 4.0
#: Default memory of a session's tile cache for a large image, GB.
DEFAULT_CACHE_GB = 1.0

#: ``panel serve`` options segdash serve does not offer: it serves one file (its own), and
#: ``--num-threads`` is segdash's compute threads (Panel's dispatches events to threads,
#: which this app does not need: its event loop never computes).
_NOT_FORWARDED = {"files", "--args", "--glob", "--num-threads"}


@dataclass(frozen=True)
class AppOptions:
    """What every session of a served dashboard shares (from the command line).

    Attributes
    ----------
    images : tuple of str
        One image every new session opens (default: a bundled sample), or several images
        and folders opened as one project.
    project : str or None
        The project file (default: ``segdash-project.json`` beside the images); given, even
        one image opens as a project.
    scheduler : str or None
        Address of a ``dask.distributed`` scheduler *Apply to project* runs on.
    num_threads : int or None
        Compute threads shared by the sessions (default: the number of cores).
    session_memory_gb : float or None
        Memory budget of one session (None or 0: no limit).
    job_time_limit : float or None
        Seconds a job may run before it is abandoned (None or 0: no limit).
    cache_gb : float
        Memory of one session's tile cache of a large image (features, results), GB.
    max_upload_gb : float
        Largest file a session may upload, GB.
    upload_dir : str or None
        Where sessions' upload folders are made (default: the system's temporary folder).
    """

    images: tuple[str, ...] = ()
    project: str | None = None
    scheduler: str | None = None
    num_threads: int | None = None
    session_memory_gb: float | None = DEFAULT_SESSION_MEMORY_GB
    job_time_limit: float | None = None
    cache_gb: float = DEFAULT_CACHE_GB
    max_upload_gb: float = DEFAULT_MAX_UPLOAD_GB
    upload_dir: str | None = None

    @property
    def image(self) -> str | None:
        """The one image sessions open when this is not a project, else None."""
        if self.is_project or not self.images:
            return None
        return self.images[0]

    @property
    def is_project(self) -> bool:
        """A folder, several images or a project file: the sessions share a project."""
        return (self.project is not None or len(self.images) > 1
                or any(Path(i).is_dir() and not is_zarr(Path(i)) for i in self.images))

    @property
    def memory_limit(self) -> int | None:
        """The session budget in bytes (None: no limit)."""
        gb = self.session_memory_gb
        return int(gb * 1e9) if gb else None

    @property
    def cache_limit(self) -> int:
        """The tile cache of a large image, bytes."""
        return int(self.cache_gb * 1e9)


def add_app_arguments(parser: argparse.ArgumentParser) -> None:
    """segdash's own serve options (the Panel app file reads the same ones)."""
    from .worker import DEFAULT_TIME_LIMIT

    parser.add_argument("image", nargs="*", default=[],
                        help="an image every session opens (default: a bundled sample); a "
                             "folder or several images open as a project")
    parser.add_argument("--project", default=None,
                        help="project file (default: FOLDER/segdash-project.json, or beside "
                             "the images)")
    parser.add_argument("--scheduler", default=None,
                        help="dask.distributed scheduler address for Apply to project "
                             "(default: local)")
    parser.add_argument("--num-threads", type=int, default=None,
                        help="threads computing features, training and predicting, shared "
                             "by all sessions (default: the number of cores)")
    parser.add_argument("--session-memory-gb", type=float, default=DEFAULT_SESSION_MEMORY_GB,
                        help="memory budget of one session in GB, checked before features "
                             f"are computed (default {DEFAULT_SESSION_MEMORY_GB:g}; 0: none)")
    parser.add_argument("--cache-gb", type=_positive, default=DEFAULT_CACHE_GB,
                        help="memory of a session's tile cache for a large image (features "
                             f"and results of tiles, GB; default {DEFAULT_CACHE_GB:g})")
    parser.add_argument("--job-time-limit", type=float, default=DEFAULT_TIME_LIMIT,
                        help="seconds a computation may run before it is abandoned "
                             f"(default {DEFAULT_TIME_LIMIT:g}; 0: none)")
    parser.add_argument("--max-upload-gb", type=_positive, default=DEFAULT_MAX_UPLOAD_GB,
                        help="largest file a user may upload, GB; larger files are refused "
                             f"before they are sent (default {DEFAULT_MAX_UPLOAD_GB:g})")
    parser.add_argument("--upload-dir", default=None,
                        help="folder where uploads are received, one private folder per "
                             "session removed when it ends (default: the system's temporary "
                             "folder, $TMPDIR; give a disk, not a RAM disk, for large files)")


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def app_options(argv: Sequence[str]) -> AppOptions:
    """:class:`AppOptions` from the app file's command line (``panel serve ... --args``)."""
    parser = argparse.ArgumentParser(prog="segdash.ui.panel_app")
    add_app_arguments(parser)
    ns = parser.parse_args(list(argv))
    return AppOptions(tuple(ns.image), ns.project, ns.scheduler, ns.num_threads,
                      ns.session_memory_gb, ns.job_time_limit or None, ns.cache_gb,
                      ns.max_upload_gb, ns.upload_dir)


@functools.lru_cache(maxsize=4)
def project_location(images: tuple[str, ...], project: str | None) -> tuple[Path, Path]:
    """The project file and image root of ``segdash serve ITEMS [--project FILE]``, the file
    created (or completed with the images named) once per process.

    Raises
    ------
    ProjectError
        Nothing to open, an item missing, or the project holds no image.
    """
    project_file, root, paths = locate(images, project)
    opened = Project.open(project_file, paths, root)
    if not opened.images:
        raise ProjectError(f"{project_file}: the project has no image")
    for img in opened.images:
        if img.problem:
            log.warning("%s", img.problem)
    log.info("project %s (%d image(s))%s", project_file, len(opened.images),
             f"; {opened.notice}" if opened.notice else "")
    return project_file, root


@functools.lru_cache(maxsize=4)
def shared_image(path: str) -> np.ndarray | Pyramid:
    """The image at ``path``, read once per process and shared read-only by the sessions:
    in memory, or a :class:`~segdash.io.pyramid.Pyramid` read lazily when it is large
    (:func:`segdash.io.pyramid.is_large`)."""
    pyramid = open_large(path)
    if pyramid is not None:
        return pyramid
    array = read_image(path)
    array.flags.writeable = False  # shared by every session: nobody may change it
    if is_large(array.shape):
        return pyramid_of(array, Path(path).name)
    return array


def create_session(options: AppOptions = AppOptions()) -> Any:
    """Build the page of one browser session (its own Segmenter) and free it at the end.

    In a project, the session opens the project as the file holds it now (a reloaded page
    or a restarted server finds every stroke again). A logged-in user (``pn.state.user``,
    with ``--basic-auth`` or ``--oauth-provider``) works in a project file of their own
    (:func:`user_project_file`), a copy of the shared one at their first visit: users do not
    see or change each other's strokes. Without login every visitor shares the one project."""
    import panel as pn
    from bokeh.core.validation import silence
    from bokeh.core.validation.warnings import FIXED_SIZING_MODE

    from .app import SegdashApp
    from .worker import shared_pool

    # The plot sets its frame size (frame_width/height), not its outer size: not a problem.
    silence(FIXED_SIZING_MODE, True)
    pn.config.notifications = True
    pn.config.exception_handler = _exception_handler
    pool = shared_pool(options.num_threads, options.job_time_limit)  # first call sets it up
    image = name = project = None
    if options.is_project:
        shared, root = project_location(options.images, options.project)
        project_file = shared
        if pn.state.user:  # logged in: the user's own project, started from the shared one
            project_file = user_project_file(shared, pn.state.user)
            if not project_file.exists() and shared.exists():
                write_atomic(project_file, shared.read_bytes())
        project = Project.open(project_file, root=root)
    elif options.image is not None:
        image, name = shared_image(options.image), Path(options.image).name
    source = image if isinstance(image, Pyramid) else None
    app = SegdashApp(image=None if source is not None else image, image_name=name,
                     project=project, scheduler=options.scheduler,
                     memory_limit=options.memory_limit, pool=pool, source=source,
                     cache_limit=options.cache_limit,
                     max_upload_bytes=int(options.max_upload_gb * 1e9),
                     upload_root=options.upload_dir)
    pn.state.on_session_destroyed(lambda context: app.close())
    log.info("session opened%s", f" for {pn.state.user}" if pn.state.user else "")
    return app.template()


def user_project_file(shared: Path, user: str) -> Path:
    """The project file of logged-in ``user``, beside the shared one ``shared``.

    Named after the user (characters a file name may hold) and a hash of the exact name, so
    two names that sanitise alike (``"a b"``, ``"a_b"``) never share a file.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", user).strip("._")[:40] or "user"
    tag = hashlib.sha256(user.encode()).hexdigest()[:8]
    return shared.with_name(f"{shared.stem}.user-{safe}-{tag}{shared.suffix}")


#: Pages built off the event loop, by document, waiting for the app file to claim them.
_BUILT: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
#: The thread pages are built on (one: builds hold the GIL; the loop keeps its turns).
_BUILDER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segdash-page")


def build_pages_off_the_loop(application: Any, options: AppOptions) -> None:
    """Build each session's page on a thread of its own before Bokeh runs the app file.

    Bokeh builds a session's document on the server's event loop (the app file runs inside
    the request that opens the page), and a segdash page is some 240 Bokeh models: 0.5-3.5
    s each on this machine, during which every other session's messages wait (10 pages
    opened at once blocked the loop for up to 14 s). Bokeh awaits
    ``on_session_created`` before it runs the app file; segdash's hook builds the page
    there, in :data:`_BUILDER`, into the session's still private document, and the app file
    (:func:`serve_page`) then finds it built.
    """
    created = application.on_session_created

    async def on_session_created(session_context: Any) -> None:
        await created(session_context)
        doc = session_context._document
        await asyncio.get_running_loop().run_in_executor(
            _BUILDER, functools.partial(_build_page, doc, options))

    application.on_session_created = on_session_created


def _build_page(doc: Any, options: AppOptions) -> None:
    import panel as pn
    from panel.io.state import set_curdoc

    # This thread holds the document while it builds (as Panel's own build claims it for
    # the loop's thread): Panel then applies changes at once instead of scheduling them.
    pn.state._thread_id_[doc] = threading.get_ident()
    with set_curdoc(doc):
        try:
            template = create_session(options)
            template.server_doc(doc, title="segdash")
        except Exception:  # the app file builds it again, on the loop, and reports
            log.exception("building a page off the event loop failed")
            return
        finally:
            pn.state._thread_id_.pop(doc, None)  # the loop claims it when it runs the app
    _BUILT[doc] = template


def serve_page(argv: Sequence[str]) -> None:
    """What the app file does per session: the page built off the loop, else build it now
    (plain ``panel serve``)."""
    import panel as pn

    if _BUILT.pop(pn.state.curdoc, None) is not None:
        return
    create_session(app_options(argv)).servable(title="segdash")


def _exception_handler(exc: BaseException) -> None:
    """Last resort for errors escaping a callback: a message in the page, the trace in the log."""
    import panel as pn

    from .app import user_message
    from .display import html_text

    if not isinstance(exc, SegdashError | ValueError):
        log.error("unhandled error in a callback", exc_info=exc)
    if pn.state.notifications is not None:
        pn.state.notifications.error(html_text(user_message(exc)), duration=8000)


def websocket_origins(port: int, address: str | None,
                      allowed: Sequence[str] | None = None) -> list[str]:
    """Hosts allowed to load the dashboard (``Host``) and open its websocket (``Origin``).

    The given ``allowed`` list if any, else this machine under its usual names and, for a
    specific (not wildcard) ``address``, that address.
    """
    if allowed:
        return list(allowed)
    origins = [f"localhost:{port}", f"127.0.0.1:{port}"]
    if address and address not in ("0.0.0.0", "::", "", "localhost", "127.0.0.1"):
        origins.append(f"{address}:{port}")
    return origins


def install_host_check(tornado_app: Any, allowed: Sequence[str]) -> None:
    """Answer 403 to every request (HTTP or websocket) whose ``Host`` is not ``allowed``.

    Bokeh checks a websocket's ``Origin`` against its allowlist, but not the ``Host``: a
    page from ``evil.example:PORT`` (a name the attacker points at this machine) has the
    same origin as the server it talks to, so only the ``Host`` tells it apart (Jupyter
    checks it the same way). ``allowed`` are Bokeh's normalised ``host:port`` patterns.
    """
    from bokeh.server.util import check_allowlist
    from tornado.web import ErrorHandler

    allowed = list(allowed)
    find = tornado_app.find_handler

    def find_handler(request: Any, **kwargs: Any) -> Any:
        if not check_allowlist(request.host or "", allowed):
            log.warning("refused a request for host %r (allowed: %s)", request.host,
                        ", ".join(allowed))
            return tornado_app.get_handler_delegate(request, ErrorHandler,
                                                    {"status_code": 403})
        return find(request, **kwargs)

    tornado_app.find_handler = find_handler


def serve_command() -> Any:
    """Panel's ``serve`` subcommand class, made into segdash's (imports Panel)."""
    from panel.command.serve import Serve

    class SegdashServe(Serve):
        """``panel serve`` of :data:`APP_FILE` with segdash's options and defaults."""

        name = "serve"
        help = "Serve the segdash dashboard (any `panel serve` option is accepted)"
        args = tuple(a for a in Serve.args if a[0] not in _NOT_FORWARDED)

        def __init__(self, parser: argparse.ArgumentParser) -> None:
            super().__init__(parser)
            add_app_arguments(parser)
            parser.set_defaults(session_ids="signed",
                                websocket_max_message_size=WEBSOCKET_MAX_MESSAGE_BYTES)

        def invoke(self, args: argparse.Namespace) -> None:
            from .upload import CHUNK_BYTES

            if args.websocket_max_message_size < CHUNK_BYTES + MESSAGE_OVERHEAD_BYTES:
                raise SystemExit(
                    f"segdash serve: --websocket-max-message-size must be at least "
                    f"{CHUNK_BYTES + MESSAGE_OVERHEAD_BYTES} bytes: uploads arrive in chunks "
                    f"of {CHUNK_BYTES} bytes, one message each")
            args.files, args.glob = [APP_FILE], False
            args.args = app_argv(args)
            args.num_threads = None  # Panel's: events stay on the event loop
            if not args.allow_websocket_origin:
                args.allow_websocket_origin = websocket_origins(args.port, args.address)
            if args.session_ids != "unsigned" and not os.environ.get("BOKEH_SECRET_KEY"):
                from bokeh.settings import settings
                from bokeh.util.token import generate_secret_key

                # Forked processes (--num-procs) inherit it, so they accept each other's ids.
                os.environ["BOKEH_SECRET_KEY"] = generate_secret_key()
                # Bokeh caches the key's bytes on first use (None when it was unset).
                settings.__dict__.pop("_secret_key_bytes", None)
                log.info("signing session ids with a key generated at start (set "
                         "BOKEH_SECRET_KEY to keep ids valid across restarts)")
            super().invoke(args)

        def customize_applications(self, args: argparse.Namespace,
                                   applications: dict[str, Any]) -> dict[str, Any]:
            applications = super().customize_applications(args, applications)
            application = next(iter(applications.values()))
            build_pages_off_the_loop(application, app_options(args.args))
            return {"/": application}  # the dashboard at the root

        def customize_server(self, server: Any) -> Any:
            # Bokeh keeps its tornado application private; its normalised origin allowlist
            # is the Host allowlist too, so the two can never disagree.
            tornado_app = server._tornado
            install_host_check(tornado_app, sorted(tornado_app.websocket_origins))
            return super().customize_server(server)

    return SegdashServe


def app_argv(args: argparse.Namespace) -> list[str]:
    """segdash's options from parsed ``segdash serve`` arguments, as the app file reads them."""
    out = [str(i) for i in args.image]
    if args.project is not None:
        out += ["--project", str(args.project)]
    if args.scheduler is not None:
        out += ["--scheduler", str(args.scheduler)]
    if args.num_threads is not None:
        out += ["--num-threads", str(args.num_threads)]
    out += ["--session-memory-gb", str(args.session_memory_gb or 0),
            "--cache-gb", str(args.cache_gb),
            "--job-time-limit", str(args.job_time_limit or 0),
            "--max-upload-gb", repr(float(args.max_upload_gb))]
    if args.upload_dir is not None:
        out += ["--upload-dir", str(args.upload_dir)]
    return out


def run_cli(argv: Sequence[str]) -> int:
    """``segdash serve ARGV``: serve until interrupted.

    Returns
    -------
    int
        Exit status: 2 when the image or project cannot be read (checked before the
        server starts), else 0 after the server stops.
    """
    command = serve_command()
    parser = argparse.ArgumentParser(prog="segdash serve", description=command.help,
                                     epilog="See docs/deploy.md for serving to a lab.")
    server = command(parser)
    args = parser.parse_args(list(argv))
    options = AppOptions(tuple(args.image), args.project, args.scheduler)
    try:  # what sessions open is checked before the server starts
        if options.is_project:
            project_file, _ = project_location(options.images, options.project)
            print(f"segdash serve: project {project_file}", flush=True)
        elif options.image is not None:
            shared_image(options.image)
    except (SegdashError, OSError) as exc:
        print(f"segdash serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s "
                                                   "%(message)s")
    if os.environ.get("SEGDASH_TIMING"):  # where each update's time goes (docs/performance.md)
        logging.getLogger("segdash.timing").setLevel(logging.DEBUG)
    server.invoke(args)
    return 0


def serve(image: str | Path | None = None, port: int = 5006, address: str | None = None,
          show: bool = False, num_threads: int | None = None,
          allow_websocket_origin: Sequence[str] | None = None,
          extra: Sequence[str] = ()) -> int:
    """Serve the dashboard until interrupted (``segdash serve`` from Python).

    Parameters
    ----------
    image : path, optional
        Image every new session opens (default: a bundled sample). Read once, at start.
    port : int
        Port to listen on.
    address : str, optional
        Address to listen on (default: all interfaces, as Bokeh does).
    show : bool
        Open a browser tab.
    num_threads : int, optional
        Compute threads shared by all sessions (default: the number of cores).
    allow_websocket_origin : sequence of str, optional
        ``host[:port]`` values allowed (see :func:`websocket_origins`).
    extra : sequence of str
        More ``segdash serve`` / ``panel serve`` options, as on the command line.

    Returns
    -------
    int
        Exit status: 2 when the image cannot be read, else 0 after the server stops.
    """
    argv = [] if image is None else [str(image)]
    argv += ["--port", str(port)]
    if address:
        argv += ["--address", address]
    if show:
        argv.append("--show")
    if num_threads:
        argv += ["--num-threads", str(num_threads)]
    for origin in allow_websocket_origin or ():
        argv += ["--allow-websocket-origin", origin]
    return run_cli([*argv, *extra])
