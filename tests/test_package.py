import subprocess
import sys


def test_import_segdash_stays_light():
    code = ("import segdash, sys; heavy = [m for m in ('panel', 'holoviews', 'bokeh', 'dask', "
            "'distributed') if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "segdash.cli", "--help"], check=True,
                         capture_output=True, text=True).stdout
    for sub in ("serve", "apply", "plugins"):
        assert sub in out
