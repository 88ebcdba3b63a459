"""Plugins that exit or hang, in a real ``segdash serve``: the server and a bystander live on.

The server runs with one compute thread and a 6 s time limit, and a plugin distribution on
its PYTHONPATH declaring two classifiers: ``exits`` (its fit calls ``sys.exit``) and
``hangs`` (its fit sleeps for an hour). One browser session trains with each in turn while
a second session, the bystander, trains with the built-in forest and gets its overlay.
"""

from __future__ import annotations

import os

import pytest

from ..test_plugins import make_distribution
from .conftest import serving
from .pages import H, W, open_app, open_card, paint_two_classes, wait_overlay, wait_status
from .test_annotations_and_plugins import unexpected_console_errors

PLUGIN = '''
import sys, time
from sklearn.dummy import DummyClassifier
from segdash.contract import Classifier

class _Exits(DummyClassifier):
    def fit(self, X, y, sample_weight=None):
        sys.exit(3)

class _Hangs(DummyClassifier):
    def fit(self, X, y, sample_weight=None):
        time.sleep(3600)
        return super().fit(X, y)

class Exits(Classifier):
    def build(self):
        return _Exits()

class Hangs(Classifier):
    def build(self):
        return _Hangs()
'''


@pytest.fixture(scope="module")
def plugin_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("misbehaving")
    site = make_distribution(folder / "site", "segdash-misbehaving", "0.1",
                             {"segdash_misbehaving.py": PLUGIN},
                             {"segdash.classifiers": {"exits": "segdash_misbehaving:Exits",
                                                      "hangs": "segdash_misbehaving:Hangs"}})
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
    with serving(folder / "serve.log", env=env,
                 args=("--num-threads", "1", "--job-time-limit", "6")) as url:
        yield url


def choose_classifier(page, name: str) -> None:
    open_card(page, "Classifier")
    page.locator(".bk-input-group", has_text="Classifier").locator("select").select_option(name)


def test_exiting_and_hanging_plugins_leave_the_server_and_a_bystander_working(
        page, context, plugin_server, console):
    open_app(page, plugin_server)
    choose_classifier(page, "exits")  # live update: each change below trains once
    paint_two_classes(page)
    banner = page.locator(".segdash-error").get_by_text("SystemExit")
    banner.wait_for(timeout=60_000)
    assert "exits" in banner.inner_text()

    choose_classifier(page, "hangs")
    # The only compute thread is held by the hung fit; the bystander still gets its turn
    # once the time limit abandons it.
    bystander = context.new_page()
    open_app(bystander, plugin_server)
    paint_two_classes(bystander)
    page.locator(".segdash-error").get_by_text("did not finish within the time limit of 6 s"
                                               ).wait_for(timeout=60_000)
    wait_status(bystander, r"trained random_forest", timeout=60_000)
    wait_overlay(bystander, H * W)

    # The session that hung carries on with the built-in classifier.
    choose_classifier(page, "random_forest")
    wait_status(page, r"trained random_forest", timeout=60_000)
    wait_overlay(page, H * W)
    assert unexpected_console_errors(console) == []
