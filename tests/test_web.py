"""The web page at `/`, driven in a real Chromium (Debian's `chromium`) by Playwright, against a real
`hallmark serve` on loopback: streaming chat, stop, model switch, errors shown in the page, safe
rendering of model output, the Check view on watermarked and human text, manifest verification,
the log. Screenshots of the chat and check views go to $HALLMARK_SCREENSHOTS (docs/images makes
the ones the docs show) or the test's temp dir.

Also the endpoints the page adds (/v1/logs, /v1/provenance/verify, token scores in /v1/detect)
and its static files' headers, over plain HTTP.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.human_text import human_passages
from tests.server_process import start_server

MODEL = "smollm2-135m-instruct"
ADAPTER = "smol-tuned"
API_KEY = "web-test-key"

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("HALLMARK_REQUIRE_BROWSER"):
        raise RuntimeError("the browser tests need Debian's chromium package (apt-get install chromium)")
    pytest.skip("no chromium on PATH (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2_lora):
    log_db = tmp_path_factory.mktemp("weblog") / "logs.db"
    srv = start_server(
        MODEL, "--lora", f"{ADAPTER}={smollm2_lora}", "--ctx-size", "1024", log_db=log_db, api_key=API_KEY
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A fresh browser context (empty storage) on the page, the API key already given for the tab."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(f"sessionStorage.setItem('hallmark.apiKey', {json.dumps(API_KEY)})")
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(server.url + "/")
    pg.wait_for_function("() => document.querySelectorAll('#model option').length >= 2")
    yield pg
    assert pg.errors == [], "the page raised JavaScript errors"
    context.close()


def screenshot_dir(tmp_path: Path) -> Path:
    out = Path(os.environ.get("HALLMARK_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def set_settings(page, max_tokens: int, temperature: float = 0.0, seed: int | None = 1) -> None:
    page.click("#settings summary")
    page.fill("#max-tokens", str(max_tokens))
    page.fill("#temperature", str(temperature))
    page.fill("#seed", "" if seed is None else str(seed))
    page.click("#settings summary")


def send(page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def last_answer(page):
    return page.locator(".message.assistant").last


def logged(server, **params) -> list[dict]:
    with server.http() as http:
        return http.get("/v1/logs", params=params).json()["data"]


# -- chat ---------------------------------------------------------------------------------------
def test_a_message_streams_into_the_page_and_matches_the_log(page, server, tmp_path):
    set_settings(page, max_tokens=48, temperature=0.8, seed=3)
    send(page, "Write a short poem about rivers.")
    answer = last_answer(page).locator(".content")
    # Record the answer's length as it grows: streaming shows partial text before the end.
    lengths = page.evaluate(
        """() => new Promise((resolve) => {
            const seen = [];
            const tick = () => {
                const msgs = document.querySelectorAll('.message.assistant .content');
                seen.push(msgs.length ? msgs[msgs.length - 1].textContent.length : 0);
                if (document.querySelector('#stop').disabled && seen.length > 1) resolve(seen);
                else setTimeout(tick, 15);
            };
            tick();
        })"""
    )
    partial = {n for n in lengths if 0 < n < lengths[-1]}
    assert len(partial) >= 2, f"no partial answer was shown while streaming: {lengths}"
    text = answer.inner_text().strip()
    facts = last_answer(page).locator(".facts").inner_text()
    assert "not written by a person" in facts
    assert "Watermarked · spec hm1-gumbel" in facts
    row = logged(server, limit=1)[0]
    assert row["model"] == MODEL and row["status"] == "completed"
    with server.http() as http:
        output = http.get(f"/v1/logs/{row['id']}").json()["output"]
    assert " ".join(output.split()) == " ".join(text.split())  # the page shows what the server sent
    page.screenshot(path=str(screenshot_dir(tmp_path) / "ui-chat.png"))
    # The conversation is kept in the browser: a reload shows it again.
    page.reload()
    page.wait_for_selector(".message.assistant")
    assert " ".join(last_answer(page).locator(".content").inner_text().split()) == " ".join(text.split())
    assert page.locator("#conversations .conv").first.inner_text().startswith("Write a short poem")


def test_stop_ends_the_stream_and_the_server_logs_a_cancellation(page, server):
    set_settings(page, max_tokens=400, temperature=1.0, seed=None)
    send(page, "Tell me a very long story about a lighthouse keeper.")
    page.wait_for_function(
        "() => document.querySelector('.message.assistant .content')?.textContent.length > 20"
    )
    page.click("#stop")
    page.wait_for_selector("#stop:disabled")
    assert "Stopped before the end." in last_answer(page).inner_text()
    shown = len(last_answer(page).locator(".content").inner_text())
    page.wait_for_timeout(300)
    assert len(last_answer(page).locator(".content").inner_text()) == shown  # nothing more arrives
    for _ in range(50):
        rows = logged(server, status="cancelled", limit=5)
        if rows:
            break
        page.wait_for_timeout(100)
    assert rows and rows[0]["completion_tokens"] < 400


def test_switching_to_the_adapter_sends_to_it(page, server):
    options = page.locator("#model option").all_inner_texts()
    assert any(o.startswith(ADAPTER) and MODEL in o for o in options)  # "smol-tuned (adapter on ...)"
    page.select_option("#model", ADAPTER)
    set_settings(page, max_tokens=8)
    send(page, "Say hello.")
    page.wait_for_selector("#stop:disabled")
    page.wait_for_function("() => document.querySelector('.message.assistant .facts') !== null")
    assert last_answer(page).locator(".who").inner_text().startswith(ADAPTER)
    assert logged(server, limit=1)[0]["model"] == ADAPTER


def test_model_output_with_html_is_shown_as_text(page):
    hostile = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> **bold** `code`'
    conversation = {
        "id": "c1",
        "title": "stored",
        "model": MODEL,
        "messages": [
            {"role": "user", "content": hostile},
            {"role": "assistant", "content": f"Here:\n\n{hostile}\n\n```html\n<script>x()</script>\n```"},
        ],
    }
    page.evaluate(
        "([c]) => { localStorage.setItem('hallmark.conversations', JSON.stringify([c]));"
        " localStorage.setItem('hallmark.current', 'c1'); }",
        [conversation],
    )
    page.reload()
    page.wait_for_selector(".message.assistant")
    assert "<script>window.pwned = 1</script>" in page.locator(".message.user").inner_text()
    answer = last_answer(page)
    assert '<img src=x onerror="window.pwned = 2">' in answer.inner_text()
    assert answer.locator("strong").inner_text() == "bold"  # Markdown still renders
    assert answer.locator("pre code").inner_text() == "<script>x()</script>"
    assert page.locator("#messages script, #messages img").count() == 0
    assert page.evaluate("window.pwned") is None
    # Sent to the model too, it is still text in the page.
    set_settings(page, max_tokens=8)
    send(page, hostile)
    page.wait_for_selector("#stop:disabled")
    assert page.locator("#messages script, #messages img").count() == 0
    assert page.evaluate("window.pwned") is None


def test_conversations_are_created_renamed_and_deleted_in_the_browser(page):
    stored = "() => JSON.parse(localStorage.getItem('hallmark.conversations') || '[]')"
    page.click("#new-chat")
    page.click("#new-chat")
    assert len(page.evaluate(stored)) == 2
    page.fill("#conv-title", "Recipes")
    page.press("#conv-title", "Enter")  # a change event
    page.click("#prompt")
    assert page.locator("#conversations .conv.current").inner_text() == "Recipes"
    assert [c["title"] for c in page.evaluate(stored)][0] == "Recipes"
    page.locator("#conversations .conv", has_text="New conversation").click()
    assert page.locator("#conv-title").input_value() == "New conversation"
    page.click("#delete-chat")
    assert [c["title"] for c in page.evaluate(stored)] == ["Recipes"]
    page.reload()
    page.wait_for_selector("#conversations .conv")
    assert page.locator("#conversations .conv").all_inner_texts() == ["Recipes"]


# -- errors -------------------------------------------------------------------------------------
def test_a_wrong_api_key_is_asked_again_and_shown(browser, server):
    context = browser.new_context()
    pg = context.new_page()
    pg.goto(server.url + "/")
    pg.wait_for_selector("#key-dialog[open]")  # the server needs a key: the page asks for it once
    pg.fill("#key-input", "wrong-key")
    pg.click("#key-save")
    pg.wait_for_selector("#banner:not([hidden])")
    assert "API key was refused" in pg.locator("#banner-text").inner_text()
    assert pg.locator("#key-dialog[open]").count() == 1  # asked again
    pg.fill("#key-input", API_KEY)
    pg.click("#key-save")
    pg.wait_for_function("() => document.querySelectorAll('#model option').length >= 2")
    assert pg.evaluate("sessionStorage.getItem('hallmark.apiKey')") == API_KEY
    assert pg.evaluate("localStorage.getItem('hallmark.apiKey')") is None  # never kept past the tab
    context.close()


def test_a_refused_request_shows_the_servers_message(page):
    set_settings(page, max_tokens=100000)
    send(page, "Hello")
    page.wait_for_selector("#banner:not([hidden])")
    message = page.locator("#banner-text").inner_text()
    assert "(400)" in message and "context length" in message
    assert page.locator("#send").is_enabled()


def test_a_dropped_connection_is_shown(page):
    page.route("**/v1/chat/completions", lambda route: route.abort("connectionreset"))
    send(page, "Hello")
    page.wait_for_selector("#banner:not([hidden])")
    assert "connection" in page.locator("#banner-text").inner_text()


# -- check --------------------------------------------------------------------------------------
def watermarked_text(server, min_words: int = 80) -> str:
    """SmolLM2's watermarked text of at least `min_words` words whose own detection is strong (p <
    1e-8): a repetitive sample (a list of "The city has ...") scores few tokens, and the page test
    is about showing what the server finds, not about the detector's power on such text."""
    with server.http() as http:
        for seed in range(20):
            resp = http.post(
                "/v1/completions",
                json={
                    "model": MODEL,
                    "prompt": "The history of the city",
                    "max_tokens": 200,
                    "temperature": 1.0,
                    "seed": seed,
                    "frequency_penalty": 0.5,
                },
            ).json()
            text = resp["choices"][0]["text"].strip()
            if len(text.split()) < min_words:
                continue
            if http.post("/v1/detect", json={"text": text, "zero_shot": False}).json()["p_value"] < 1e-8:
                return text
    raise AssertionError("no strongly watermarked sample in 20 seeds")


def test_check_finds_a_watermarked_passage_and_not_a_human_text(page, server, tmp_path):
    machine = watermarked_text(server)
    human = human_passages(80)[0]
    text = human + "\n\n" + machine + "\n\n" + human_passages(80)[1]
    page.click("#tab-check")
    page.fill("#check-text", text)
    page.click("#check-run")
    page.wait_for_selector("#check-result:not([hidden])")
    assert page.locator("#wm-verdict").inner_text() == "Watermarked"
    marked = page.locator("#check-highlight mark.wm").all_inner_texts()
    with server.http() as http:
        spans = http.post("/v1/detect", json={"text": text, "zero_shot": False}).json()["spans"]
    assert marked == [text[s["start"] : s["end"]] for s in spans]  # the page marks what the server found
    assert marked, "no passage was highlighted"
    start, end = text.index(machine), text.index(machine) + len(machine)
    covered = 0
    for m in marked:  # each passage lies mostly within the machine text (its edges are where the
        at = text.index(m)  # score's run starts and ends: a few tokens either way)
        inside = max(0, min(at + len(m), end) - max(at, start))
        assert inside >= 0.8 * len(m), (at, len(m), start, end)
        covered += inside
    assert covered > 0.5 * len(machine)
    assert page.locator("#score-plot polyline").count() == 1
    page.screenshot(path=str(screenshot_dir(tmp_path) / "ui-check.png"), full_page=True)

    page.fill("#check-text", human)
    page.click("#check-run")
    page.wait_for_function("() => document.querySelector('#wm-verdict').textContent !== 'Watermarked'")
    assert page.locator("#wm-verdict").inner_text() == "No watermark found"
    assert page.locator("#check-highlight mark").count() == 0


def test_a_text_file_can_be_opened_in_check(page, server, tmp_path):
    machine = watermarked_text(server)
    path = tmp_path / "essay.txt"
    path.write_text(machine, encoding="utf-8")
    page.click("#tab-check")
    page.set_input_files("#check-file", str(path))
    page.wait_for_function("() => document.querySelector('#check-text').value.length > 0")
    assert page.locator("#check-text").input_value() == machine
    page.click("#check-run")
    page.wait_for_selector("#check-result:not([hidden])")
    assert page.locator("#wm-verdict").inner_text() == "Watermarked"


def test_an_answers_manifest_verifies_in_check_and_an_edit_fails(page):
    set_settings(page, max_tokens=16)
    send(page, "Name a colour.")
    page.wait_for_selector("#stop:disabled")
    last_answer(page).locator("button.link").click()
    page.wait_for_selector("#verify-result:not([hidden])")
    assert page.locator("#verify-verdict").inner_text().startswith("Verified")
    page.fill("#check-text", page.locator("#check-text").input_value() + " (edited)")
    page.click("#verify-run")
    page.wait_for_function("() => document.querySelector('#verify-verdict').textContent.startsWith('Not')")
    assert "text" in page.locator("#verify-checks").inner_text()


# -- log, keyboard, small screens ---------------------------------------------------------------------
def test_the_log_lists_filters_and_opens_requests(page, server):
    set_settings(page, max_tokens=4)
    send(page, "Hi")
    page.wait_for_selector("#stop:disabled")
    page.click("#tab-log")
    page.wait_for_selector("#log-table tbody tr")
    assert page.locator("#log-table tbody tr").count() == len(logged(server, limit=100))
    page.select_option("#log-status", "cancelled")
    page.click("#log-refresh")
    page.wait_for_timeout(300)
    statuses = page.locator("#log-table tbody td:nth-child(3)").all_inner_texts()
    assert all(s.startswith("cancelled") for s in statuses) or statuses == ["No requests match."]
    page.select_option("#log-status", "")
    page.click("#log-refresh")
    page.wait_for_timeout(300)
    page.locator("#log-table tbody tr").first.click()
    page.wait_for_selector("#log-detail:not([hidden])")
    detail = json.loads(page.locator("#log-detail-body").inner_text())
    assert detail["id"] == logged(server, limit=1)[0]["id"] and "response" in detail


def test_keyboard_moves_between_tabs(page):
    page.focus("#tab-chat")
    page.keyboard.press("ArrowRight")
    assert page.locator("#view-check").is_visible()
    assert page.evaluate("document.activeElement.id") == "tab-check"
    page.keyboard.press("ArrowLeft")
    assert page.locator("#view-chat").is_visible()
    for field in ("prompt", "model", "check-text", "manifest", "temperature", "seed"):
        assert page.locator(f"label[for={field}]").count() == 1, f"#{field} has no label"


def test_a_phone_sized_screen_needs_no_sideways_scrolling(browser, server):
    context = browser.new_context(viewport={"width": 375, "height": 740})
    context.add_init_script(f"sessionStorage.setItem('hallmark.apiKey', {json.dumps(API_KEY)})")
    pg = context.new_page()
    pg.goto(server.url + "/")
    pg.wait_for_function("() => document.querySelectorAll('#model option').length >= 2")
    for tab in ("chat", "check", "log"):
        pg.click(f"#tab-{tab}")
        assert pg.evaluate("document.documentElement.scrollWidth") <= 375, tab
    context.close()


# -- the endpoints behind the page --------------------------------------------------------------------
def test_page_files_are_served_with_a_strict_policy_and_nothing_else(server):
    index = httpx.get(server.url + "/")  # the page itself needs no key; what it calls does
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    assert "script-src 'self'" in index.headers["content-security-policy"]
    assert httpx.get(server.url + "/ui/app.js").headers["content-type"].startswith("text/javascript")
    for bad in ("/ui/..%2Fserver%2Fapp.py", "/ui/nothing.js", "/ui/%2e%2e"):
        assert httpx.get(server.url + bad).status_code == 404, bad
    assert httpx.get(server.url + "/v1/logs").status_code == 401  # the log needs the key


def test_logs_endpoint_filters_and_checks_its_input(server):
    with server.http() as http:
        http.post("/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 2})
        rows = http.get("/v1/logs", params={"limit": 3}).json()["data"]
        assert 1 <= len(rows) <= 3 and rows == sorted(rows, key=lambda r: -r["created"])
        since = rows[0]["created"]
        newer = http.get("/v1/logs", params={"since": since}).json()["data"]
        assert [r["id"] for r in newer] == [rows[0]["id"]]
        assert http.get("/v1/logs", params={"model": "nobody"}).json()["data"] == []
        for params in ({"limit": 0}, {"limit": 10_000}, {"status": "maybe"}, {"since": "x"}):
            err = http.get("/v1/logs", params=params)
            assert err.status_code == 400 and err.json()["error"]["param"] == next(iter(params)), params
            assert "query parameter" in err.json()["error"]["message"]
        missing = http.get("/v1/logs/nope-not-an-id")
        assert missing.status_code == 404 and "no logged request" in missing.json()["error"]["message"]
        assert str(server.log_db) not in missing.text  # the server's disk layout is its own
        long = http.get("/v1/logs/" + "a" * 500).json()["error"]
        assert long["param"] == "request_id" and long["type"] == "invalid_request_error"


def test_verify_endpoint_checks_a_manifest_against_its_text(server):
    with server.http() as http:
        resp = http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6},
        ).json()
        text = resp["choices"][0]["message"]["content"]
        ok = http.post("/v1/provenance/verify", json={"text": text, "manifest": resp}).json()
        assert ok["ok"] is True and ok["failed"] is None
        bad = http.post("/v1/provenance/verify", json={"text": text + "!", "manifest": resp}).json()
        assert bad["ok"] is False and bad["failed"] == "text"
        err = http.post("/v1/provenance/verify", json={"text": text, "manifest": "{not json"})
        assert err.status_code == 400 and err.json()["error"]["param"] == "manifest"


def test_detect_returns_token_scores_aligned_with_the_text(server):
    text = watermarked_text(server)
    with server.http() as http:
        r = http.post("/v1/detect", json={"text": text, "token_scores": True}).json()
        plain = http.post("/v1/detect", json={"text": text}).json()
    scores = r["token_scores"]
    assert plain["token_scores"] is None and len(scores) == r["scored"]
    assert all(0 <= s <= e <= len(text) for s, e, _ in scores)
    assert [s for s, _, _ in scores] == sorted(s for s, _, _ in scores)
    # Watermarked text scores above the null mean on average (z > 0), human text does not.
    assert sum(z for _, _, z in scores) / len(scores) > 0.5


def test_without_a_key_the_page_asks_for_none_and_shows_the_zero_shot_assessment(browser, tmp_path):
    srv = start_server(MODEL, "--ctx-size", "512", "--zero-shot", log_db=tmp_path / "logs.db")
    try:
        health = httpx.get(srv.url + "/health").json()
        assert health["api_key_required"] is False and health["zero_shot"] is True
        assert httpx.get(srv.url + "/v1/logs").status_code == 200  # loopback, no key
        machine = watermarked_text(srv)
        context = browser.new_context()
        pg = context.new_page()
        pg.goto(srv.url + "/")
        pg.wait_for_function("() => document.querySelectorAll('#model option').length >= 1")
        assert pg.locator("#key-dialog[open]").count() == 0 and pg.locator("#key-button").is_hidden()
        pg.click("#tab-check")
        pg.fill("#check-text", machine)
        pg.click("#check-run")
        pg.wait_for_selector("#zs-section:not([hidden])", timeout=120_000)
        expected = httpx.post(srv.url + "/v1/detect", json={"text": machine}, timeout=120).json()["zero_shot"]
        assert expected["assessment"] != "too_short"
        assert pg.locator("#zs-verdict").inner_text() == expected["message"]  # what the server said
        assert "not proof" in pg.locator("#zs-caveat").inner_text()
        pg.fill("#check-text", "Too short to judge.")
        pg.click("#check-run")
        pg.wait_for_function("() => document.querySelector('#zs-verdict').textContent.includes('too short')")
        context.close()
    finally:
        srv.stop()


def test_hallmark_ui_starts_the_server_and_opens_the_page(tmp_path):
    """`hallmark ui` opens the page in the user's browser ($BROWSER here: a script that records it)."""
    import subprocess
    import sys
    import time

    from tests.server_process import free_port

    opened = tmp_path / "opened.txt"
    recorder = tmp_path / "browser.py"
    recorder.write_text(f"import sys, pathlib; pathlib.Path({str(opened)!r}).write_text(sys.argv[1])\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALLMARK_") or k == "HALLMARK_CONFIG_DIR"}
    env.update(BROWSER=f"{sys.executable} {recorder} %s", HALLMARK_ZERO_SHOT="0")
    cmd = [
        sys.executable,
        "-m",
        "hallmark",
        "ui",
        MODEL,
        "--port",
        str(port),
        "--log-db",
        str(tmp_path / "l.db"),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not opened.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        url = opened.read_text()
        assert url == f"http://127.0.0.1:{port}/"
        page = httpx.get(url)
        assert page.status_code == 200 and "<title>hallmark</title>" in page.text
    finally:
        proc.terminate()
        proc.wait(30)
    assert f"web page: http://127.0.0.1:{port}/" in proc.stderr.read()
