"""The server's web page and API docs in a real browser (headless Chromium driven by selenium/chromedriver).

The page must build a prediction form from the model's metadata (fields labelled with the Pima feature
names), predict what ``model.predict`` predicts, and load nothing from anywhere but the server itself.
Skipped when Chromium, chromedriver or selenium is missing, except in CI (CI=true), where that fails.
"""
import json
import os
import re
import shutil
import sys
import time
import urllib.request

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serving_util import save_version, serve, tutorial_model  # noqa: E402

pytest.importorskip("uvicorn")

PIMA_NAMES = ["pregnancies", "glucose", "blood_pressure", "skin_thickness", "insulin", "bmi",
              "diabetes_pedigree", "age"]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1000"]


def _missing(what):
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI (CI=true)")
    pytest.skip(f"{what} is not installed")


def _find(*names):
    for name in names:
        path = shutil.which(name) or (name if os.path.isabs(name) and os.access(name, os.X_OK) else None)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser_parts():
    chromium = _find("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
    if chromium is None:
        _missing("Chromium")
    driver = _find("/usr/bin/chromedriver", "chromedriver")
    if driver is None:
        _missing("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        _missing("selenium (pip install selenium)")
    return chromium, driver


@pytest.fixture
def browser(browser_parts, tmp_path, monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    chromium, driver_path = browser_parts
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium Manager go looking for drivers online
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path,
                                                                log_output=str(tmp_path / "chromedriver.log")))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory):
    model, x = tutorial_model()
    repo = tmp_path_factory.mktemp("page-models")
    save_version(str(repo), "pima", 1, model)
    return model, np.asarray(x, dtype=np.float32), repo


def wait_for(driver, condition, what, timeout=30):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = condition(driver)
            if value:
                return value
        except Exception as e:  # element not there yet, stale, ...
            last = e
        time.sleep(0.05)
    page = driver.page_source[-3000:]
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error {last!r}); page:\n{page}")


def network_events(driver):
    """The DevTools Network.* events chromedriver recorded since the last call."""
    events = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"].startswith("Network."):
            events.append(message)
    return events


BROWSER_INTERNAL = ("chrome:", "chrome-untrusted:", "chrome-extension:", "devtools:", "data:", "about:", "blob:")


def assert_only_own_requests(events, base):
    urls = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"
            and not e["params"]["request"]["url"].startswith(BROWSER_INTERNAL)]
    assert urls, "no network request was recorded (is performance logging on?)"
    foreign = [u for u in urls if not (u.startswith(base + "/") or u == base)]
    assert not foreign, f"the page loaded resources from elsewhere: {foreign}"
    failed = [(e["params"].get("errorText"), e["params"].get("requestId")) for e in events
              if e["method"] == "Network.loadingFailed" and not e["params"].get("canceled")]
    assert not failed, f"failed network requests: {failed}"
    bad = [(e["params"]["response"]["url"], e["params"]["response"]["status"]) for e in events
           if e["method"] == "Network.responseReceived" and e["params"]["response"]["status"] >= 400]
    assert not bad, f"requests answered with an error status: {bad}"
    return urls


def assert_no_console_errors(driver):
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, f"browser console errors: {errors}"


def assert_no_external_urls(html, base):
    urls = re.findall(r"""(?:https?:)?//[^\s"'<>)]+""", html)
    foreign = [u for u in urls if not u.startswith(base)]
    assert not foreign, f"the HTML references other hosts: {foreign}"


def test_page_predicts_what_the_model_predicts(browser, tutorial, tmp_path):
    from selenium.webdriver.common.by import By
    model, x, repo = tutorial
    with serve(repo, "--poll-seconds", "0", tmp_path=tmp_path) as server:
        with urllib.request.urlopen(server.url + "/", timeout=10) as r:
            assert r.status == 200 and r.headers["content-type"].startswith("text/html")
            html = r.read().decode("utf-8")
        assert_no_external_urls(html, server.url)

        network_events(browser)  # forget what the browser's own start page loaded
        browser.get(server.url + "/")
        wait_for(browser, lambda d: d.find_element(By.ID, "status").get_attribute("data-loaded") == "true",
                 "the model list")
        form = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'section[data-model="pima"] form.predict'),
                        "the prediction form of model 'pima'")
        labels = [lab.text.strip() for lab in form.find_elements(By.TAG_NAME, "label")]
        assert labels == PIMA_NAMES, labels
        fields = form.find_elements(By.TAG_NAME, "input")
        assert [f.get_attribute("name") for f in fields] == PIMA_NAMES
        for i, label in enumerate(form.find_elements(By.TAG_NAME, "label")):  # each label names its field
            assert label.get_attribute("for") == fields[i].get_attribute("id")

        row = x[0]
        for field, value in zip(fields, row):
            field.clear()
            field.send_keys(repr(float(value)))  # the exact float32 value, written out in full
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        result = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'section[data-model="pima"] .result'
                                                                              '[data-prediction]'),
                          "the prediction to be shown")
        assert "error" not in (result.get_attribute("class") or ""), result.text
        shown = json.loads(result.get_attribute("data-prediction"))
        expected = model.predict(row[None, :], verbose=0)[0]
        np.testing.assert_allclose(np.asarray(shown, dtype=np.float64), expected, rtol=1e-5, atol=1e-7)
        assert result.text.startswith("Prediction: ")
        np.testing.assert_allclose(json.loads(result.text[len("Prediction: "):]), expected, rtol=1e-5, atol=1e-7)

        # a bad value is answered with the server's message, shown as an error
        fields[0].clear()
        browser.execute_script("arguments[0].value = '1e39'", fields[0])
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for(browser, lambda d: "error" in d.find_element(By.CSS_SELECTOR, 'section[data-model="pima"] .result')
                 .get_attribute("class"), "the error to be shown")
        message = browser.find_element(By.CSS_SELECTOR, 'section[data-model="pima"] .result').text
        assert message.startswith("Error: ") and "too large for float32" in message, message

        events = network_events(browser)
        urls = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
        assert server.url + "/v1/models/pima:predict" in urls
        # the 400 of the bad value is the one expected error status; everything else must have worked
        assert_only_own_requests([e for e in events if not (e["method"] == "Network.responseReceived"
                                                             and e["params"]["response"]["status"] == 400)],
                                 server.url)
        assert_no_console_errors_except_the_400(browser)
        assert "Traceback" not in server.log()


def assert_no_console_errors_except_the_400(driver):
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
              and not (":predict" in e["message"] and "400" in e["message"])]
    assert not errors, f"browser console errors: {errors}"


def test_docs_page_lists_and_runs_the_operations(browser, tutorial, tmp_path):
    from selenium.webdriver.common.by import By
    _, _, repo = tutorial
    with serve(repo, "--poll-seconds", "0", tmp_path=tmp_path) as server:
        with urllib.request.urlopen(server.url + "/openapi.json", timeout=10) as r:
            spec = json.load(r)
        with urllib.request.urlopen(server.url + "/docs", timeout=10) as r:
            assert r.status == 200 and r.headers["content-type"].startswith("text/html")
            html = r.read().decode("utf-8")
        assert_no_external_urls(html, server.url)
        operations = [(verb.upper(), path, op["summary"]) for path, item in spec["paths"].items()
                      for verb, op in item.items()]

        network_events(browser)
        browser.get(server.url + "/docs")
        wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#ops details")) == len(operations),
                 f"{len(operations)} operations to be listed")
        listed = [s.get_attribute("textContent") for s in browser.find_elements(By.CSS_SELECTOR, "#ops summary")]
        for verb, path, summary in operations:
            assert any(t.startswith(verb) and path in t and summary in t for t in listed), (verb, path, listed)
        tags = {op["tags"][0] for item in spec["paths"].values() for op in item.values()}
        assert {h.text for h in browser.find_elements(By.CSS_SELECTOR, "#ops h2")} == tags

        # try one operation from the page, with the example body the page fills in
        details = [d for d in browser.find_elements(By.CSS_SELECTOR, "#ops details")
                   if d.find_element(By.TAG_NAME, "code").text == "/v1/models/{name}:predict"][0]
        details.find_element(By.TAG_NAME, "summary").click()
        assert details.find_element(By.TAG_NAME, "input").get_attribute("value") == "pima"
        body = json.loads(details.find_element(By.TAG_NAME, "textarea").get_attribute("value"))
        assert body == {"instances": [[6, 148, 72, 35, 0, 33.6, 0.627, 50]]}
        details.find_element(By.TAG_NAME, "button").click()
        out = wait_for(browser, lambda d: details.find_element(By.TAG_NAME, "pre").text, "the response to be shown")
        assert out.startswith("200"), out
        assert "predictions" in out

        events = network_events(browser)
        urls = assert_only_own_requests(events, server.url)
        assert server.url + "/openapi.json" in urls and server.url + "/v1/models/pima:predict" in urls
        assert_no_console_errors(browser)
        assert "Traceback" not in server.log()
