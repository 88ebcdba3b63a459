"""The ``segdash`` command: ``serve``, ``train``, ``apply`` and ``plugins``.

Each subcommand's work lives in its own module, imported only when that subcommand runs,
so ``segdash apply`` never imports the dashboard.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ._version import __version__


def _serve(args: argparse.Namespace) -> int:
    from .ui.serve import serve

    images = list(args.image or [])
    single = len(images) == 1 and not args.project and not Path(images[0]).is_dir()
    return serve(image=images[0] if single else None,
                 images=() if single else images, project=args.project,
                 scheduler=args.scheduler,
                 port=args.port, address=args.address, show=args.show,
                 num_threads=args.num_threads, allow_websocket_origin=args.allow_websocket_origin)


def _train(args: argparse.Namespace) -> int:
    from .errors import SegdashError
    from .project import Project, train_project

    try:
        project = Project.load(args.project, args.root)
        painted = project.painted()
        model = train_project(project)
        model.save(args.out)
    except (SegdashError, ValueError, OSError) as exc:
        print(f"segdash train: {exc}", file=sys.stderr)
        return 2
    images = len({i for i, _ in painted})
    print(f"segdash train: {model.classifier} on the strokes of {images} image(s) "
          f"({len(painted)} frame(s)), {len(model.classes_)} classes, features "
          f"{', '.join(model.stack.names)}: model written to {args.out}")
    return 0


def _apply(args: argparse.Namespace) -> int:
    from .batch.runner import run_cli

    return run_cli(args)


def _plugins(args: argparse.Namespace) -> int:
    from .plugins_report import run_cli

    return run_cli(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segdash",
        description="Interactive image segmentation: paint strokes, train, segment.",
    )
    parser.add_argument("--version", action="version", version=f"segdash {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the dashboard in the browser")
    serve.add_argument("image", nargs="*",
                       help="an image to open (default: a bundled sample); a folder or "
                            "several images open as a project")
    serve.add_argument("--project", default=None,
                       help="project file (default: FOLDER/segdash-project.json, or beside "
                            "the images)")
    serve.add_argument("--port", type=int, default=5006, help="port (default 5006)")
    serve.add_argument("--address", default=None, help="address to listen on")
    serve.add_argument("--scheduler", default=None,
                       help="dask.distributed scheduler address for Apply to project "
                            "(default: local)")
    serve.add_argument("--show", action="store_true", help="open a browser tab")
    serve.add_argument("--num-threads", type=int, default=None,
                       help="threads for computations (default: number of cores)")
    serve.add_argument("--allow-websocket-origin", action="append", default=None,
                       help="host[:port] allowed to connect (repeatable)")
    serve.set_defaults(func=_serve)

    train = sub.add_parser("train", help="train a project's model, as the dashboard does")
    train.add_argument("project", help="project file (segdash-project.json)")
    train.add_argument("--out", required=True, help="model file to write (.skops)")
    train.add_argument("--root", default=None,
                       help="folder of the project's images (default: the project file's)")
    train.set_defaults(func=_train)

    apply = sub.add_parser("apply", help="apply a saved model to images (tiled, with Dask)")
    apply.add_argument("model", help="model file (.skops) downloaded from the dashboard")
    apply.add_argument("inputs", nargs="+",
                       help="image files, folders, globs or project files (.json)")
    apply.add_argument("--out", required=True, help="output folder")
    apply.add_argument("--proba", action="store_true", help="also write probabilities (TIFF)")
    apply.add_argument("--overlay", action="store_true", help="also write coloured overlays")
    apply.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    apply.add_argument("--tile", type=int, default=None, help="tile size in pixels")
    apply.add_argument("--scheduler", default=None,
                       help="address of a dask.distributed scheduler (default: local)")
    apply.add_argument("--workers", type=int, default=None,
                       help="threads of the local scheduler (default: number of cores)")
    apply.add_argument("--quiet", action="store_true", help="no progress bars")
    apply.set_defaults(func=_apply)

    plugins = sub.add_parser("plugins", help="list feature extractors and classifiers")
    plugins.add_argument("--check", action="store_true",
                         help="exit non-zero when a plugin failed to load")
    plugins.set_defaults(func=_plugins)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``segdash`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
