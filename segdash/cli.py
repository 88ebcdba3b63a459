"""The ``segdash`` command: ``serve``, ``train``, ``apply`` and ``plugins``.

Each subcommand's work lives in its own module, imported only when that subcommand runs,
so ``segdash apply`` never imports the dashboard.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._version import __version__


def _serve(argv: Sequence[str]) -> int:
    # Panel's own serve command parses these (it knows its options; importing it loads Panel,
    # so it is built only when serve runs).
    from .ui.serve import run_cli

    return run_cli(argv)


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

    # Listed for --help only: main() hands `segdash serve ...` to Panel's serve command.
    sub.add_parser("serve", help="serve the dashboard in the browser (`segdash serve --help`: "
                                 "image, limits and every `panel serve` option)")

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
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        return _serve(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
