"""The tree viewer page in a real browser (Debian's headless Chromium and chromedriver, driven by
selenium) against the real server: a finished mcts tree drawn whole with its chosen path, a
streamed search watched as it grows, and the timeline replayed back to the root."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY, AUTH, MODEL, ROOT

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

PROBLEM = [{"role": "user", "content": "Tom has 3 apples and buys 4 more. How many apples does he have? "
                                       'Think step by step, then end with "The answer is N."'}]
WAIT_S = 120
# The README's picture: refreshed only when asked (VIEWER_SCREENSHOT=bench/tree_viewer.png), so a
# test run leaves the tracked file alone; otherwise the shot goes to the ignored bench/results/.
SCREENSHOT = ROOT / os.environ.get("VIEWER_SCREENSHOT", "bench/results/tree_viewer.png")


@pytest.fixture(scope="module")
def browser():
    driver_path = shutil.which("chromedriver")
    if driver_path is None:
        pytest.fail("chromedriver is missing: `make test` installs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def mcts(http, **extra) -> dict:
    body = {"model": MODEL, "messages": PROBLEM, "max_tokens": 48, "seed": 7,
            "search": {"strategy": "mcts", "k": 2, "root_k": 3, "iterations": 6, "parallel": 2, "max_depth": 3},
            **extra}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()["search"]


def count_nodes(node: dict) -> int:
    return 1 + sum(count_nodes(child) for child in node.get("children", []))


def words(text: str) -> list[str]:
    """Text as the browser shows it may differ in whitespace only."""
    return text.split()


def open_page(browser, url: str) -> None:
    browser.get(f"{url}#key={API_KEY}")


def drawn(browser) -> list:
    return browser.find_elements(By.CSS_SELECTOR, "svg#tree g.node")


def wait_done(browser) -> None:
    WebDriverWait(browser, WAIT_S).until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-state")
                                         in ("done", "failed"))
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done", \
        browser.find_element(By.ID, "status").text


def test_a_finished_mcts_tree_is_drawn_whole_with_its_chosen_path(server, http, browser):
    report = mcts(http)
    assert report["viewer_url"] == f"{server}/trees/{report['tree_id']}"
    stored = http.get(f"/v1/search/trees/{report['tree_id']}").json()
    open_page(browser, report["viewer_url"])
    wait_done(browser)
    assert not browser.find_element(By.ID, "index").is_displayed()
    assert len(drawn(browser)) == count_nodes(stored["tree"]["root"])
    chosen = {g.get_attribute("data-address"): g for g in browser.find_elements(By.CSS_SELECTOR, "svg#tree g.node.chosen")}
    leaf = max(chosen, key=len)
    path = [".".join(leaf.split(".")[:depth]) for depth in range(len(leaf.split(".")) + 1)]
    assert leaf and sorted(chosen) == sorted(path)  # the root and each step down to the chosen leaf
    assert words(browser.find_element(By.ID, "answer").text) == words(stored["answer"]["text"])
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg#tree path.edge.chosen")) == len(chosen) - 1

    chosen[leaf].click()
    text = browser.find_element(By.CSS_SELECTOR, "#detail pre.text").text
    node = stored["tree"]["root"]
    for index in leaf.split("."):
        node = node["children"][int(index)]
    assert words(text) == words(node["text"]) and words(text)
    assert "engine call" in browser.find_element(By.ID, "detail").text

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000

    slider = browser.find_element(By.ID, "timeline")
    browser.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'))", slider)
    assert len(drawn(browser)) == 1 and drawn(browser)[0].get_attribute("data-address") == ""
    assert "the prompt alone" in browser.find_element(By.ID, "timeline-label").text

    browser.get(f"{server}/trees")  # the index: the key stays for this tab
    wait_done(browser)
    assert browser.find_elements(By.CSS_SELECTOR, f"#trees tr[data-tree='{report['tree_id']}']")
    assert not browser.find_element(By.ID, "viewer").is_displayed()


def test_a_page_opened_while_a_streamed_search_runs_grows_with_it(server, browser):
    """The page is opened on the tree id of the stream's first chunk; the search runs on with
    more iterations than the first test's, so it is no cache hit."""
    body = {"model": MODEL, "messages": PROBLEM, "max_tokens": 48, "seed": 8, "stream": True,
            "search": {"strategy": "mcts", "k": 2, "root_k": 3, "iterations": 10, "parallel": 1, "max_depth": 3}}
    first_chunk: dict = {}
    chunks: list[dict] = []
    got_first = threading.Event()

    def stream() -> None:
        with httpx.stream("POST", f"{server}/v1/chat/completions", json=body, headers=AUTH, timeout=300) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    chunks.append(json.loads(line[len("data: "):]))
                    if not got_first.is_set():
                        first_chunk.update(chunks[0]["search"]["progress"])
                        got_first.set()

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    assert got_first.wait(WAIT_S)
    open_page(browser, first_chunk["viewer_url"])
    counts = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        counts.append(len(drawn(browser)))
        if browser.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("done", "failed"):
            break
        time.sleep(0.3)
    streamer.join(timeout=300)
    wait_done(browser)
    growing = [count for count in counts if count > 1]
    assert len(set(growing)) >= 2 and growing == sorted(growing), counts  # seen growing, never shrinking
    progress = [chunk["search"]["progress"] for chunk in chunks if "progress" in chunk.get("search", {})]
    assert sum(len(p.get("nodes", [])) for p in progress) == len(drawn(browser))  # the stream read the same feed
