"""docs/plugins.md stays true: build its tutorial package from the page, install it into a
temporary folder (not into this environment), and run it in a fresh interpreter."""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from .test_plugins import make_distribution, run_python

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def tutorial_files() -> dict[str, str]:
    """``{path: content}`` of every fenced block that starts with ``# file: PATH``."""
    files = {}
    for block in re.findall(r"```[a-z]*\n(.*?)```", DOC.read_text(), flags=re.S):
        first, _, rest = block.partition("\n")
        if first.startswith("# file: "):
            files[first.removeprefix("# file: ").strip()] = rest
    return files


def test_tutorial_lists_every_file_it_needs():
    assert set(tutorial_files()) == {
        "segdash-tutorial/pyproject.toml",
        "segdash-tutorial/src/segdash_tutorial/__init__.py",
        "segdash-tutorial/tests/test_contract.py",
    }


@pytest.fixture(scope="module")
def tutorial_site(tmp_path_factory):
    """The tutorial package written out and "installed" into a folder of its own: the
    ``.dist-info`` (METADATA, entry_points.txt) pip would write, made from the page's
    pyproject.toml, next to the package's ``src`` folder. Offline, and the shared
    environment is left untouched."""
    root = tmp_path_factory.mktemp("tutorial")
    for rel, content in tutorial_files().items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)
    project = tomllib.loads((root / "segdash-tutorial" / "pyproject.toml").read_text())
    meta = project["project"]
    assert project["tool"]["setuptools"]["packages"]["find"]["where"] == ["src"]
    make_distribution(root / "site", meta["name"], meta["version"], {},
                      meta["entry-points"])
    site = os.pathsep.join([str(root / "site"), str(root / "segdash-tutorial" / "src")])
    yield root, site
    shutil.rmtree(root, ignore_errors=True)


def test_installed_tutorial_plugin_is_listed_by_segdash_plugins(tutorial_site):
    root, site = tutorial_site
    result = run_python("import sys; from segdash.cli import main; "
                        "sys.exit(main(['plugins', '--check']))", path=site, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(re.match(r"\s+local_range\s+ok\s+segdash-tutorial 0\.1\.0\s+"
                        r"segdash_tutorial:LocalRange", line) for line in lines)
    assert any(re.match(r"\s+extra_trees\s+ok\s+segdash-tutorial 0\.1\.0\s+"
                        r"segdash_tutorial:ExtraTrees", line) for line in lines)


def test_tutorial_plugin_passes_its_own_tests(tutorial_site):
    root, site = tutorial_site
    result = run_python(
        "import sys, pytest; sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', "
        f"{str(root / 'segdash-tutorial' / 'tests')!r}]))", path=site, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_tutorial_python_example_runs(tutorial_site):
    root, site = tutorial_site
    result = run_python(f"""
        import numpy as np, segdash
        rng = np.random.default_rng(0)
        image = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
        labels = np.zeros((64, 64), np.uint8); labels[4:8] = 1; labels[-8:-4] = 2
        model = segdash.fit(image, labels, features=["basic", "local_range"],
                            classifier="extra_trees",
                            feature_params={{"local_range": {{"num_scales": 4}}}})
        model.save({str(root / "model.skops")!r})
        loaded = segdash.load_model({str(root / "model.skops")!r})
        assert np.array_equal(loaded.predict(image), model.predict(image))
        assert loaded.feature_names[-1] == "local_range: ch2 range 31", loaded.feature_names[-1]
        print("ok")
    """, path=site, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok"
