"""User-controlled strings reach the page as text: file names, class names, refusal messages.

Every payload is an ``<img src=x onerror=...>`` that, if the page ever parsed it as HTML,
would set a flag on ``window`` (the image ``x`` never loads, so ``onerror`` always fires).
The tests upload an image under such a name, a broken file under such a name, a model file
whose refusal message names a type whose module is such a tag, and rename a class to one;
then they assert that no flag is set, no such ``<img>`` exists anywhere in the page (shadow
roots included) and the strings show literally.
"""

from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np
from PIL import Image
from playwright.sync_api import Page

import segdash

from ..conftest import two_texture_image
from .pages import open_app, upload, wait_status
from .test_annotations_and_plugins import unexpected_console_errors


def payload(flag: str) -> str:
    """An HTML tag that sets ``window[flag]`` when parsed as HTML (attribute values quoted:
    Markdown passes such a tag through as HTML, an unquoted ``a=b=c`` it would not)."""
    return f'<img src="x" onerror="window.{flag}=1">'



FLAGS = ("xss_image_name", "xss_bad_name", "xss_model", "xss_class")
# Every <img> the payloads would create (shadow roots included: Playwright's CSS pierces them).
INJECTED = "img[src='x']"


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def hostile_model_file() -> tuple[bytes, str]:
    """A real segdash model file whose estimator's module name is an HTML tag.

    Returns the file and the type name segdash's refusal message must show.
    """
    image, labels = two_texture_image(48)
    data = segdash.fit(image, labels).to_bytes()
    src = zipfile.ZipFile(io.BytesIO(data))
    schema = json.loads(src.read("schema.json"))
    module = payload("xss_model")
    found = []

    def retag(node):
        if isinstance(node, dict):
            if node.get("__class__") == "ExtraTreesClassifier":
                node["__module__"] = module
                found.append(node)
            for v in node.values():
                retag(v)
        elif isinstance(node, list):
            for v in node:
                retag(v)

    retag(schema)
    assert found, "the model file has no ExtraTreesClassifier node to retag"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            content = json.dumps(schema).encode() if item.filename == "schema.json" \
                else src.read(item.filename)
            dst.writestr(item, content)
    return out.getvalue(), f"{module}.ExtraTreesClassifier"


def choose(page: Page, accept: str, name: str, content: bytes, mime: str) -> None:
    upload(page, accept, {"name": name, "mimeType": mime, "buffer": content})


def assert_no_script_ran(page: Page) -> None:
    flags = page.evaluate(f"() => {json.dumps(list(FLAGS))}.filter((f) => window[f])")
    assert flags == []
    assert page.locator(INJECTED).count() == 0


def test_names_and_messages_with_html_show_as_text_and_run_no_script(page, server, console):
    open_app(page, server)

    # An image whose name is a tag: the info line shows the name literally.
    name = payload("xss_image_name") + ".png"
    choose(page, ".png", name, png(np.full((40, 60), 128, np.uint8)), "image/png")
    info = page.get_by_text(f"{name}: 60x40, 1 channel(s), uint8")
    info.wait_for(timeout=30_000)
    assert_no_script_ran(page)

    # A file that is no image, under such a name: the error banner and the notification.
    bad = payload("xss_bad_name") + ".png"
    choose(page, ".png", bad, b"this is not an image", "image/png")
    banner = page.locator(".segdash-error").get_by_text(re.compile(r"not a PNG"))
    banner.wait_for(timeout=30_000)
    assert bad in banner.inner_text()
    toast = page.locator(".notyf__message", has_text="not a PNG")
    toast.first.wait_for(timeout=10_000)
    assert bad in toast.first.inner_text()
    assert_no_script_ran(page)

    # A model file holding a type whose module name is a tag: refused, the type shown as text.
    data, type_name = hostile_model_file()
    choose(page, ".skops", "model.skops", data, "application/octet-stream")
    refusal = page.locator(".segdash-error").get_by_text(re.compile("refused"))
    refusal.wait_for(timeout=30_000)
    assert type_name in refusal.inner_text()
    page.locator(".notyf__message", has_text=type_name).first.wait_for(timeout=10_000)
    assert_no_script_ran(page)

    # A class renamed to a tag: its button shows the text.
    class_name = payload("xss_class")
    field = page.get_by_label("Name of the selected class")
    field.fill(class_name)
    field.press("Enter")
    page.locator(".segdash-class button", has_text=class_name).wait_for(timeout=10_000)
    assert_no_script_ran(page)

    # The session still works: the 40x60 image is open and answers.
    wait_status(page, r"opened a 60x40 image")
    assert unexpected_console_errors(console) == []


def test_plugin_errors_with_html_are_listed_as_text(page, tmp_path_factory, console):
    """A plugin that fails to load with an HTML error message: listed literally."""
    import os

    from ..test_plugins import make_distribution
    from .conftest import serving

    folder = tmp_path_factory.mktemp("html_plugin")
    reason = payload("xss_plugin") + " missing"
    site = make_distribution(
        folder / "site", "segdash-html-plugin", "0.1",
        {"segdash_html_plugin.py": f"raise ImportError({reason!r})\n"},
        {"segdash.features": {"html_plugin": "segdash_html_plugin:Nothing"}})
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
    with serving(folder / "serve.log", env=env) as url:
        open_app(page, url)
        item = page.locator(".segdash-plugin-errors li", has_text="html_plugin")
        item.wait_for(timeout=10_000)
        assert reason in item.inner_text()
        assert page.evaluate("() => window.xss_plugin") is None
        assert page.locator(INJECTED).count() == 0
    assert unexpected_console_errors(console) == []
