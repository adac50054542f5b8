"""The live dashboard in a real headless browser (Debian's chromium driven by Playwright): the
page loads, its numbers move while simulated shoppers stream in through Kafka, the explorer
finds a session, and a screenshot is not blank."""

from __future__ import annotations

import dataclasses
import io
import secrets
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from PIL import Image

from stream_reco.config import Settings
from stream_reco.kafka_io import ensure_topics
from stream_reco.simulator import Storefront, make_catalog
from stream_reco.workers import start_worker, stop_worker, wait_worker_ready
from tests.integration.conftest import Kafka, forget_isolated, uid

SETUP = "run deploy/local/setup.sh, which installs Debian's chromium and the dev dependencies"
EVENTS_PER_S = 150
STREAM_S = 25.0  # at most: the producer stops as soon as the test has seen what it needs

EXPERIMENT = {
    "salt": "board",
    "variants": [
        {"name": "fixed", "share": 0.5, "control": True, "learned_ranker": False},
        {"name": "nosknn", "share": 0.5, "blend": {"sknn": 0}},
    ],
}


def chromium() -> str:
    """Debian's chromium: never a browser downloaded by `playwright install`."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(f"chromium not found on PATH: {SETUP}")
    return found


@pytest.fixture(scope="module")
def shop(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kafka]:
    """A worker of this module's own, its catalogue published."""
    home = tmp_path_factory.mktemp("board")
    rules = home / "rules.json"  # an experiment running from the start, for its table
    rules.write_bytes(orjson.dumps({"experiments": {"board": EXPERIMENT}}))
    own = dataclasses.replace(
        settings.isolated(uid("board")),
        require_catalog=False,
        web_port=settings.web_port + 53,
        rules_file=str(rules),
    )
    log = home / "worker.log"
    ensure_topics(own)
    proc = start_worker(own, log)
    kafka = Kafka(own)
    try:
        wait_worker_ready(proc, log)
        for record in make_catalog(60, seed=3):
            kafka.producer.produce(
                own.topic_catalog, key=str(record["item_id"]), value=_json(record)
            )
        kafka.producer.flush(10)
        yield kafka
    finally:
        kafka.close()
        stop_worker(proc)
        forget_isolated(settings, own)


@pytest.fixture(scope="module")
def guarded(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A worker of this module's own with an HTTP token (no traffic: the page's token path)."""
    own = dataclasses.replace(
        settings.isolated(uid("guarded")),
        require_catalog=False,
        web_port=settings.web_port + 54,
        http_token=secrets.token_urlsafe(16),
    )
    log = tmp_path_factory.mktemp("guarded") / "worker.log"
    ensure_topics(own)
    proc = start_worker(own, log)
    try:
        wait_worker_ready(proc, log)
        yield own
    finally:
        stop_worker(proc)
        forget_isolated(settings, own)


class Shoppers(threading.Thread):
    """Simulated shoppers (simulator.Storefront) streamed to the events topic in real time."""

    def __init__(self, kafka: Kafka) -> None:
        super().__init__(daemon=True)
        self.kafka, self.stop = kafka, threading.Event()
        self.sent: list[dict[str, Any]] = []

    def run(self) -> None:
        s, shop = (
            self.kafka.settings,
            Storefront(make_catalog(60, seed=3), seed=5, run_id=uid("sim")),
        )
        started = time.monotonic()
        for n, e in enumerate(shop.stream(concurrency=10)):
            if self.stop.is_set() or time.monotonic() - started > STREAM_S:
                break
            e = {**e, "ts": int(time.time() * 1000)}  # now: never too old nor in the future
            self.kafka.producer.produce(s.topic_events, key=str(e["session_id"]), value=_json(e))
            self.sent.append(e)
            if n % 10 == 9:  # now and then a page asks for recommendations too
                ask = {"request_id": uid("r"), "session_id": e["session_id"]}
                self.kafka.producer.produce(
                    s.topic_requests, key=str(e["session_id"]), value=_json(ask)
                )
            if n % 15 == 14:
                self.kafka.producer.flush(5)
                time.sleep(15 / EVENTS_PER_S)
        self.kafka.producer.flush(10)


def _json(doc: object) -> bytes:
    return orjson.dumps(doc)


def _number(text: str) -> float:
    return float(text) if text not in ("", "–") else -1.0


def test_the_dashboard_shows_the_live_stream_and_explores_a_session(
    shop: Kafka, tmp_path: Path
) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"Playwright for Python is not installed: {SETUP}")

    path = chromium()
    base = f"http://127.0.0.1:{shop.settings.web_port}"
    shoppers = Shoppers(shop)
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=path, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{base}/dashboard")
            page.wait_for_function("document.getElementById('updated').textContent !== 'never'")
            assert page.inner_text("#ranker") in ("blend", "model")

            # Live numbers: the total climbs and the rate shows while the shoppers stream.
            shoppers.start()
            totals: list[float] = []
            rates: list[float] = []
            deadline = time.monotonic() + STREAM_S + 10
            while time.monotonic() < deadline:
                totals.append(_number(page.inner_text("#events-total")))
                rates.append(_number(page.inner_text("#events-per-s")))
                answered = min(_number(page.inner_text(f"#{w}-n")) for w in ("req", "push"))
                if len(set(totals)) >= 4 and max(rates) > 0 and answered > 0:
                    break
                time.sleep(0.5)
            shoppers.stop.set()
            shoppers.join(30)
            assert len(set(totals)) >= 4, f"the event total did not move: {totals}"
            assert totals == sorted(totals), totals
            assert max(rates) > 0, rates
            assert _number(page.inner_text("#push-n")) > 0  # pushes after cart additions
            assert _number(page.inner_text("#req-p50")) > 0  # the requests' latency
            page.wait_for_function(
                "document.querySelectorAll('#trending tr').length > 3"
            )  # trending items, with their titles from the catalogue
            assert page.inner_text("#trending").count("\n") >= 3
            # The running experiment's variants, each with its CTR and interval.
            page.wait_for_selector("#experiments table")
            table = page.inner_text("#experiments")
            assert "board" in table and "fixed" in table and "nosknn" in table, table
            assert table.count("%") >= 2, table

            # The explorer: a session that added to cart was pushed recommendations.
            carted = Counter(
                str(e["session_id"]) for e in shoppers.sent if e["type"] == "add_to_cart"
            )
            sid = carted.most_common(1)[0][0]
            page.fill("#session-input", sid)
            page.click("#session-go")
            page.wait_for_selector("#found-session")
            assert page.inner_text("#found-session") == sid
            result = page.inner_text("#session-result").lower()  # headings are upper-cased
            assert "add_to_cart" in result and "variant" in result and "recent events" in result
            reasons = page.locator("#session-result table").last.inner_text()
            assert "item-" in reasons and any(w in reasons for w in ("with", "popular", "similar"))

            shot = page.screenshot(full_page=True)
            # Where data renders: the event-rate bars and the trending table. The header's
            # gradient alone would make a whole-page check pass on an empty dashboard.
            spark = page.locator("#spark").screenshot()
            trending = page.locator("#trending").screenshot()
            page.fill("#session-input", "{bad}")
            page.click("#session-go")
            page.wait_for_selector("#session-result .bad")
            assert "session_id" in page.inner_text("#session-result")
        finally:
            browser.close()
    assert not errors, errors

    for name, png in (("dashboard", shot), ("spark", spark), ("trending", trending)):
        (tmp_path / f"{name}.png").write_bytes(png)  # to look at when this fails
    colours, ink = _ink(spark)
    assert colours >= 10 and ink > 0.01, f"no rate bars drawn: {colours} colours, {ink:.1%} ink"
    colours, ink = _ink(trending)
    assert colours >= 8 and ink > 0.02, f"an empty trending table: {colours} colours, {ink:.1%}"


def _ink(png: bytes) -> tuple[int, float]:
    """A region's distinct colours, and the share of its pixels unlike its background (its
    most common colour): a region nothing rendered into has one colour and no ink."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    _, counts = np.unique(pixels, axis=0, return_counts=True)
    return len(counts), 1.0 - float(counts.max()) / len(pixels)


def test_the_page_sends_the_token_it_is_given_and_survives_odd_answers(
    guarded: Settings,
) -> None:
    """With a token, the page shows why it has no data; opened as /dashboard#token=..., it
    polls with the token, drops it from the address bar, and the explorer uses it too. A null
    interval bound renders as "–" and a non-JSON error page as its HTTP status."""
    try:
        from playwright.sync_api import Route, sync_playwright
    except ImportError:
        pytest.fail(f"Playwright for Python is not installed: {SETUP}")

    base, token = f"http://127.0.0.1:{guarded.web_port}", guarded.http_token
    errors: list[str] = []

    def one_bound_unknown(route: Route) -> None:
        """The worker's real data, with an experiment row whose figures are partly unknown."""
        real = route.fetch()
        doc = real.json()
        row = {"experiment": "e", "variant": "v", "sessions": 3, "impressions": 0}
        doc["experiments"] = [{**row, "revenue_per_session": None, "revenue_interval": [None, 1.5]}]
        route.fulfill(response=real, json=doc)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium(), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            page = browser.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{base}/dashboard")
            page.wait_for_function("document.getElementById('updated').textContent !== 'never'")
            assert "token" in page.inner_text("#updated")  # a 401, said

            fresh = browser.new_page()  # a new tab opened with the token: read at load
            fresh.on("pageerror", lambda exc: errors.append(str(exc)))
            fresh.goto(f"{base}/dashboard#token={token}")
            fresh.wait_for_function("document.getElementById('ranker').textContent !== '–'")
            assert token not in fresh.url

            page.route("**/dashboard/data", one_bound_unknown)
            page.goto(f"{base}/dashboard#token={token}")  # added to the open page: hashchange
            page.wait_for_selector("#experiments table")
            assert page.inner_text("#ranker") in ("blend", "model")  # polled with the token
            assert token not in page.url  # out of the address bar (and the history)
            assert "(– – 1.50)" in page.inner_text("#experiments")

            page.fill("#session-input", "nobody-here")
            page.click("#session-go")  # the token field left empty: the page's own is sent
            page.wait_for_selector("#session-result .warn")
            assert "not found" in page.inner_text("#session-result")

            page.route(
                "**/dashboard/session?**",
                lambda route: route.fulfill(status=502, body="<html>bad gateway</html>"),
            )
            page.click("#session-go")
            page.wait_for_selector("#session-result .bad")
            assert "HTTP 502" in page.inner_text("#session-result")
        finally:
            browser.close()
    assert not errors, errors
