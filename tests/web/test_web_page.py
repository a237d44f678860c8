"""The web page in a real browser (Debian's headless Chromium) against a real stack with the
fake camera: the canvas holds the camera's frame after the documented contrast mapping,
without the stack's token the page is read-only, with it start and stop from the page make
files h5py reads back, a refused path shows the API's words, a killed receiver shows down
then up, and the page reconnects after the web service itself restarts. Writes the
screenshots docs/web-idle.png, web-recording.png, web-error.png.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import httpx
import numpy as np
import pytest

from stddaq_fake_camera.frames import FramePattern
from tests.web.web_stack import (
    WebStack,
    chromium_missing,
    documented_mapping,
    read_canvas,
    start_browser,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_missing() is not None, reason=chromium_missing() or ""),
]

HEIGHT, WIDTH = 768, 1024
_CANVAS_IS_GREY = """
const data = document.getElementById('image').getContext('2d').getImageData(0, 0, 64, 64).data;
for (let i = 0; i < data.length; i += 4) {
  if (data[i] !== data[i + 1] || data[i + 1] !== data[i + 2]) return false;
}
return true;
"""
RATE_HZ = 20.0
DOCS = Path(__file__).resolve().parents[2] / "docs"


class Page:
    """The stack, the browser on its page, and the camera's frames."""

    def __init__(self, stack: WebStack, browser: Any) -> None:
        self.stack = stack
        self.browser = browser
        self.pattern = FramePattern((HEIGHT, WIDTH), np.dtype("<u2"))

    def by_id(self, element: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.browser.find_element(By.ID, element)

    def text(self, element: str) -> str:
        return str(self.by_id(element).text)

    def body(self, key: str) -> str | None:
        value = self.browser.execute_script(f"return document.body.dataset.{key} || null")
        return None if value is None else str(value)

    def image_id(self) -> int:
        value = self.browser.execute_script("return document.getElementById('image').dataset.imageId || null")
        return int(value) if value is not None else -1

    def service_up(self, name: str) -> str | None:
        value = self.browser.execute_script(
            f"const r = document.querySelector('#services tr[data-service=\"{name}\"]');"
            " return r ? r.dataset.up : null"
        )
        return None if value is None else str(value)

    def fill(self, element: str, text: str) -> None:
        field = self.by_id(element)
        field.clear()
        if text:
            field.send_keys(text)

    def choose_colormap(self, name: str) -> None:
        from selenium.webdriver.support.ui import Select

        Select(self.by_id("colormap")).select_by_value(name)
        grey = name == "grey"
        wait_for(f"the {name} colours", lambda: self.browser.execute_script(_CANVAS_IS_GREY) == grey)

    def screenshot(self, name: str) -> None:
        self.browser.save_screenshot(str(DOCS / name))

    def check_canvas(self) -> dict[str, str]:
        """Read the canvas back and compare it, pixel by pixel, with the camera's frame."""
        dataset, shown = read_canvas(self.browser)
        frame = self.pattern.frame(int(dataset["imageId"]))
        expected = documented_mapping(frame, dataset)
        assert shown.shape == expected.shape, (shown.shape, expected.shape, dataset)
        differ = int(np.count_nonzero(shown != expected))
        assert differ == 0, f"{differ} of {shown.size} canvas pixels differ from image {dataset['imageId']}"
        return dataset


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    stack = WebStack(tmp_path_factory.mktemp("web"), HEIGHT, WIDTH, RATE_HZ)
    browser = None
    try:
        stack.up()
        browser = start_browser()
        browser.get(stack.url)
        yield Page(stack, browser)
    finally:
        if browser is not None:
            browser.quit()
        stack.down()


def test_the_canvas_shows_the_camera_frame_after_the_documented_mapping(page: Page) -> None:
    wait_for("an image on the canvas", lambda: page.image_id() >= 0)
    wait_for(
        "every service up",
        lambda: all(
            page.service_up(n) == "yes" for n in ("driver", "receiver", "writer-0", "writer-1", "live-0")
        ),
    )
    # The whole 1024 x 768 image does not fit the page: every 2nd pixel is shown (the first
    # frame may come before the page told the server its size).
    wait_for("a frame sized for the page", lambda: int(read_canvas(page.browser)[0]["step"]) > 1)
    whole = page.check_canvas()
    assert (whole["x0"], whole["y0"], whole["w"], whole["h"]) == ("0", "0", str(WIDTH), str(HEIGHT))
    lo, hi = float(whole["lo"]), float(whole["hi"])
    frame = page.pattern.frame(int(whole["imageId"]))
    assert frame.min() <= lo < hi <= frame.max() + 1, (lo, hi)

    # Zoomed in, the region is shown at full resolution.
    page.by_id("zoom-in").click()
    page.by_id("zoom-in").click()
    wait_for("a full-resolution region", lambda: read_canvas(page.browser)[0].get("step") == "1")
    zoomed = page.check_canvas()
    assert int(zoomed["w"]) < WIDTH and int(zoomed["h"]) < HEIGHT

    # Manual min/max: the mapping uses exactly those.
    page.by_id("auto").click()
    page.fill("lo", "90")
    page.fill("hi", "115")
    page.by_id("p-lo").click()  # leaves the field: its change event sends the view
    wait_for("the manual contrast", lambda: float(read_canvas(page.browser)[0].get("hi", "nan")) == 115)
    manual = page.check_canvas()
    assert (float(manual["lo"]), float(manual["hi"])) == (90, 115)
    assert page.image_id() >= int(whole["imageId"])

    # The value under the pointer is the full-resolution pixel of the image it names.
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(page.browser).move_to_element_with_offset(page.by_id("image"), 37, 21).perform()
    cell = wait_for(
        "a pointer value",
        lambda: page.browser.execute_script(
            "const d = document.getElementById('pointer-value').dataset; return d.value ? {...d} : null"
        ),
    )
    pointed = page.pattern.frame(int(cell["imageId"]))
    assert float(cell["value"]) == float(pointed[int(cell["y"]), int(cell["x"])])

    page.by_id("zoom-reset").click()
    page.by_id("auto").click()
    wait_for("the whole image again", lambda: read_canvas(page.browser)[0].get("w") == str(WIDTH))


def test_without_the_stack_token_the_page_is_read_only(page: Page) -> None:
    wait_for("read-only", lambda: page.body("mode") == "readonly")
    assert not page.by_id("start").is_enabled()
    assert "read-only" in page.text("mode")
    page.fill("token", "not-the-token")
    page.by_id("token-form").submit()
    wait_for("a wrong token refused", lambda: "read-only" in page.text("mode"))
    assert page.body("mode") == "readonly" and not page.by_id("start").is_enabled()
    # The driver refuses a start without the token, with its own words.
    refused = httpx.post(f"{page.stack.url}api/start", json={"path": str(page.stack.data)})
    assert refused.status_code == 401 and "Bearer" in refused.json()["detail"]
    page.fill("token", page.stack.token)
    page.by_id("token-form").submit()
    wait_for("control", lambda: page.body("mode") == "control" and page.by_id("start").is_enabled())
    page.screenshot("web-idle.png")


def test_start_and_stop_from_the_page_write_files_h5py_reads(page: Page) -> None:
    target = page.stack.data / "from-page"
    page.fill("path", str(target))
    page.fill("prefix", "scan")
    page.fill("n-image", "")
    page.by_id("start").click()
    wait_for(
        "recording", lambda: page.body("state") == "recording" and page.stack.status()["images_written"] >= 10
    )
    page.check_canvas()  # the live image goes on while recording
    page.choose_colormap("viridis")
    page.screenshot("web-recording.png")
    page.choose_colormap("grey")
    page.by_id("stop").click()
    wait_for(
        "idle after stop", lambda: page.body("state") == "idle" and page.stack.status()["outcome"] is not None
    )
    status = page.stack.status()
    assert status["outcome"] == "file_saved", status
    assert status["images_missing"] == 0, "the open page cost the acquisition images"
    assert status["images_written"] >= 10
    checked = 0
    for path in status["files"]:
        assert Path(path).parent == target and Path(path).name.startswith("scan")
        with h5py.File(path, "r") as h5:
            group = h5[page.stack.detector]
            ids = group["metadata"]["image_id"]
            for index, image_id in enumerate(ids):
                assert np.array_equal(group["data"][index], page.pattern.frame(int(image_id)))
                checked += 1
    assert checked == status["images_written"]
    wait_for("the acquisition listed", lambda: str(status["acquisition_id"]) in page.text("history"))
    assert "file_saved" in page.text("history")

    # A fixed number of images ends by itself.
    page.fill("path", str(page.stack.data / "counted"))
    page.fill("n-image", "15")
    wait_for("start enabled", lambda: page.by_id("start").is_enabled())
    page.by_id("start").click()
    wait_for(
        "15 images saved",
        lambda: (
            (s := page.stack.status())["outcome"] == "file_saved"
            and s["images_written"] == 15
            and s["state"] == "idle"
        ),
    )


def test_a_path_outside_the_allowed_roots_shows_the_api_error(page: Page) -> None:
    wait_for("idle", lambda: page.body("state") == "idle")
    outside = "/var/tmp/not-allowed-here"
    page.fill("path", outside)
    page.fill("n-image", "5")
    wait_for("start enabled", lambda: page.by_id("start").is_enabled())
    page.by_id("start").click()
    shown = wait_for("an error", lambda: page.by_id("acq-error").is_displayed() and page.text("acq-error"))
    # the same request straight to the driver, with the token
    answer = page.stack.rest.post("/start", json={"path": outside, "file_prefix": "scan", "n_image": 5})
    assert answer.status_code == 403
    assert shown == f"403: {answer.json()['detail']}"
    page.screenshot("web-error.png")
    assert page.stack.status()["state"] == "idle"


def test_a_killed_receiver_shows_down_then_up(page: Page) -> None:
    wait_for("receiver up", lambda: page.service_up("receiver") == "yes")
    page.stack.kill("receiver")
    wait_for("receiver down on the page", lambda: page.service_up("receiver") == "no", every=0.05)
    wait_for("receiver up again", lambda: page.service_up("receiver") == "yes")
    before = page.image_id()
    wait_for("new images after the restart", lambda: page.image_id() > before)
    page.check_canvas()


def test_the_page_reconnects_after_the_web_service_restarts(page: Page) -> None:
    wait_for("connected", lambda: page.body("connected") == "yes")
    page.stack.kill("web")
    wait_for("disconnected", lambda: page.body("connected") == "no", every=0.05)
    wait_for("connected again", lambda: page.body("connected") == "yes")
    before = page.image_id()
    wait_for("new images after the reconnect", lambda: page.image_id() > before)
    page.check_canvas()
