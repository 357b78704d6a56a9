"""The serving path on the fake backend, in-process: the official openai client talks to the
FastAPI app through httpx's ASGI transport (no port, no model file), so the shared endpoint
skeleton, the error table and the request log are tested in milliseconds. The real server
process on the shipped model is tested end to end in test_server.py."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from collections.abc import Iterator

import openai
import pytest

from hallmark.backends.fake import EOS
from tests.fake_server import MODEL, FakeServer


@pytest.fixture
def app(tmp_path) -> Iterator[FakeServer]:
    a = FakeServer(tmp_path)
    yield a
    a.close()


def test_chat_response_stream_and_log_agree(app):
    kwargs = dict(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=10, seed=4)

    async def run(client, _):
        whole = await client.chat.completions.create(**kwargs)
        stream = await client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
        return whole, [c async for c in stream]

    whole, chunks = app.call(run)
    text = whole.choices[0].message.content
    assert whole.object == "chat.completion" and len(text) > 0 and whole.usage.completion_tokens == 10
    assert whole.model_extra["hallmark"]["watermark"]["applied"] is True
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].model_extra["hallmark"]["ai_generated"] is True  # the first chunk says what it is
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "length"
    ]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    rows = app.log_rows()
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert {r["output"] for r in rows} == {text}
    assert json.loads(rows[0]["prompt"]) == [{"role": "user", "content": "hi"}]


def test_completions_with_several_prompts_and_n_choices(app):
    async def run(client, _):
        whole = await client.completions.create(model=MODEL, prompt=["ab", "cd"], n=2, max_tokens=5, seed=1)
        stream = await client.completions.create(
            model=MODEL, prompt=["ab", "cd"], n=2, max_tokens=5, seed=1, stream=True
        )
        return whole, [c async for c in stream]

    whole, chunks = app.call(run)
    assert [c.index for c in whole.choices] == [0, 1, 2, 3]  # prompt-major
    assert whole.choices[0].text != whole.choices[1].text  # seed + i per choice
    n_prompt = len(app.model.tokenize("ab")) + len(app.model.tokenize("cd"))
    assert whole.usage.prompt_tokens == n_prompt  # each prompt counted once, whatever n is
    streamed = {i: "" for i in range(4)}
    finished = {}
    for c in chunks:
        for choice in c.choices:
            streamed[choice.index] += choice.text
            if choice.finish_reason:
                finished[choice.index] = choice.finish_reason
    assert streamed == {c.index: c.text for c in whole.choices}
    assert finished == {i: "length" for i in range(4)}


def test_ignore_eos_is_accepted_and_keeps_generating(tmp_path):
    app = FakeServer(tmp_path, backend={"eos_after": 12})
    try:

        async def run(client, _):
            plain = await client.completions.create(model=MODEL, prompt="abc", max_tokens=20, temperature=0)
            forced = await client.completions.create(
                model=MODEL, prompt="abc", max_tokens=20, temperature=0, extra_body={"ignore_eos": True}
            )
            return plain, forced

        # Before the fix `ignore_eos` was refused as an unsupported parameter (400).
        plain, forced = app.call(run)
        assert plain.choices[0].finish_reason == "stop" and plain.usage.completion_tokens == 12 - 4
        assert forced.choices[0].finish_reason == "length" and forced.usage.completion_tokens == 20
    finally:
        app.close()


def test_errors_follow_the_table_and_every_refusal_is_logged(app):
    async def run(client, http):
        out = {}
        for name, call in {
            "too_long": lambda: client.completions.create(model=MODEL, prompt="x" * 600, max_tokens=1),
            "chat_too_long": lambda: client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x" * 600}], max_tokens=1
            ),
            "no_room": lambda: client.completions.create(model=MODEL, prompt="x", max_tokens=600),
            "bad_bias": lambda: client.completions.create(model=MODEL, prompt="x", logit_bias={"999": 1}),
            "no_model": lambda: client.completions.create(model="gpt-4o", prompt="x"),
            "bad_ignore_eos": lambda: client.completions.create(
                model=MODEL, prompt="x", extra_body={"ignore_eos": "maybe"}
            ),
        }.items():
            with pytest.raises(openai.APIStatusError) as e:
                await call()
            out[name] = (e.value.status_code, e.value.body)
        # A lone surrogate, as JSON allows ("\ud800"); the openai client cannot send one.
        body = b'{"model": "fake", "messages": [{"role": "user", "content": "hi \\ud800"}]}'
        json_type = {"content-type": "application/json"}
        r = await http.post("/v1/chat/completions", content=body, headers=json_type)
        out["surrogate"] = (r.status_code, r.json()["error"])
        return out

    got = app.call(run)
    assert got["too_long"][0] == 400 and got["too_long"][1]["code"] == "context_length_exceeded"
    assert got["too_long"][1]["param"] == "prompt" and "512" in got["too_long"][1]["message"]
    assert got["chat_too_long"][1]["param"] == "messages"
    n = len(app.model.tokenize("x"))
    assert got["no_room"][1]["param"] == "max_tokens"
    assert f"{n + 600} tokens ({n} in the prompt, 600 for the completion)" in got["no_room"][1]["message"]
    assert got["bad_bias"][0] == 400 and "outside the vocabulary" in got["bad_bias"][1]["message"]
    assert got["no_model"][0] == 404 and got["no_model"][1]["code"] == "model_not_found"
    rows = app.log_rows()
    assert got["bad_ignore_eos"][0] == 400 and got["bad_ignore_eos"][1]["param"] == "ignore_eos"
    assert got["surrogate"][0] == 400 and "lone surrogate" in got["surrogate"][1]["message"]
    assert sorted(r["http_status"] for r in rows) == [400, 400, 400, 400, 400, 400, 404]
    assert all(r["status"] == "error" and r["response"]["error"]["message"] == r["error"] for r in rows)


def test_a_failed_decode_step_is_a_500_and_the_server_goes_on(app):
    async def run(client, _):
        app.backend.fail_next_decode()
        with pytest.raises(openai.InternalServerError) as e:
            await client.completions.create(model=MODEL, prompt="boom", max_tokens=4)
        after = await client.completions.create(model=MODEL, prompt="fine", max_tokens=4)
        return e.value, after

    err, after = app.call(run)
    assert (
        err.status_code == 500
        and err.body["type"] == "server_error"
        and "injected fault" in err.body["message"]
    )
    assert after.usage.completion_tokens == 4
    statuses = sorted((r["status"], r["http_status"]) for r in app.log_rows())
    assert statuses == [("completed", 200), ("error", 500)]


def test_a_stopped_engine_answers_503_shutting_down(app):
    for engine in app.state.engines.values():
        engine.stop()

    async def run(client, _):
        with pytest.raises(openai.APIStatusError) as e:
            await client.completions.create(model=MODEL, prompt="late", max_tokens=2)
        return e.value

    err = app.call(run)
    assert err.status_code == 503 and err.body["code"] == "shutting_down"
    assert [r["http_status"] for r in app.log_rows()] == [503]


def test_a_full_queue_answers_503_but_an_impossible_request_400(tmp_path):
    app = FakeServer(tmp_path, max_waiting=1)  # 2 slots + 1 waiting place
    try:

        async def run(_, http):
            app.backend.pause()  # the first request stays in flight, holding both slots
            first = asyncio.create_task(
                http.post("/v1/completions", json={"model": MODEL, "prompt": ["a", "b"], "max_tokens": 2})
            )
            while (
                app.state.engines[MODEL].scheduler.n_running + app.state.engines[MODEL].scheduler.n_waiting
                < 2
            ):
                await asyncio.sleep(0.01)
            full = await http.post(
                "/v1/completions", json={"model": MODEL, "prompt": ["c", "d"], "max_tokens": 2}
            )
            never = await http.post(
                "/v1/completions", json={"model": MODEL, "prompt": ["a", "b"], "n": 2, "max_tokens": 2}
            )
            app.backend.resume()
            return full, never, await first

        full, never, first = app.call(run)
        assert full.status_code == 503 and full.json()["error"]["code"] == "queue_full"
        assert full.headers["retry-after"] == "1"
        # 4 sequences can never be held by 2 slots + 1 place: retrying would never help.
        assert never.status_code == 400 and never.json()["error"]["code"] == "too_many_sequences"
        assert never.json()["error"]["param"] == "n"
        assert first.status_code == 200
    finally:
        app.close()


def test_max_queue_zero_still_serves_an_idle_server(tmp_path):
    app = FakeServer(tmp_path, max_waiting=0)
    try:

        async def run(client, _):
            return await client.completions.create(model=MODEL, prompt=["a", "b"], max_tokens=2)

        # Before the fix: 503 "at capacity" from a server with both slots free.
        assert len(app.call(run).choices) == 2
    finally:
        app.close()


def test_detect_finds_the_watermark_of_a_served_answer(app):
    async def run(client, http):
        resp = await client.completions.create(
            model=MODEL, prompt="Once", max_tokens=100, temperature=1.0, seed=9, logit_bias={str(EOS): -100}
        )
        text = resp.choices[0].text
        found = (await http.post("/v1/detect", json={"text": text})).json()
        spec = resp.model_extra["hallmark"]["watermark"]["spec_id"]
        with_spec = (await http.post("/v1/detect", json={"text": text, "spec": spec})).json()
        bad = await http.post("/v1/detect", json={"text": text, "fpr": 2})
        surrogate = await http.post(
            "/v1/detect", content=b'{"text": "a \\ud800 b"}', headers={"content-type": "application/json"}
        )
        unknown = re.sub(r"-k[0-9a-f]+-", "-k000000000000-", spec)
        no_key = await http.post("/v1/detect", json={"text": text, "spec": unknown})
        malformed = await http.post("/v1/detect", json={"text": text, "spec": '{"context_width": 2.5}'})
        # A reference text's pairs are left out: the answer's own first half as a "template".
        referenced = (
            await http.post("/v1/detect", json={"text": text, "reference": [text[: len(text) // 2]]})
        ).json()
        too_many = await http.post("/v1/detect", json={"text": text, "reference": ["a"] * 65})
        return spec, found, with_spec, bad, surrogate, no_key, malformed, referenced, too_many

    spec, found, with_spec, bad, surrogate, no_key, malformed, referenced, too_many = app.call(run)
    assert found["excluded"] == 0 and referenced["excluded"] > 0
    assert referenced["scored"] == found["scored"] - referenced["excluded"]
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "reference"
    assert malformed.status_code == 400 and malformed.json()["error"]["param"] == "spec"
    # The key store is the server's business: no path, no key names in the answer.
    message = no_key.json()["error"]["message"]
    assert no_key.status_code == 400 and "no watermark key with id" in message
    assert os.environ["HALLMARK_CONFIG_DIR"] not in message and "default" not in message
    assert found["verdict"] == "watermarked" and found["spec_id"] == spec and found["model"] == MODEL
    assert with_spec["p_value"] == found["p_value"]
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "fpr"
    assert surrogate.status_code == 400 and "lone surrogate" in surrogate.json()["error"]["message"]


def _raw(http, body: bytes):
    return http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})


def test_types_are_strict_and_each_error_names_its_field(app):
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    cases = {
        # field -> a value of the wrong type (or out of rules) that used to be accepted or misreported
        "temperature": {**chat, "temperature": "0.5"},
        "n": {**chat, "n": True},
        "stream": {**chat, "stream": "true"},
        "max_tokens": {**chat, "max_tokens": "4"},
        "top_logprobs": {**chat, "top_logprobs": 2},  # without logprobs
        "stream_options": {**chat, "stream_options": {"include_usage": True}},  # without stream
        "logit_bias": {**chat, "logit_bias": {"²": 1}},  # "²".isdigit() is True, int("²") fails
        "stop": {**chat, "stop": ["x"] * 17},
    }

    async def run(_, http):
        out = {field: await http.post("/v1/chat/completions", json=body) for field, body in cases.items()}
        hi = b'"messages": [{"role": "user", "content": "hi"}]'
        surrogates = {
            field: await _raw(http, b"{" + fields + b", " + hi + b"}")
            for field, fields in {
                "model": b'"model": "fa\\ud800ke"',
                "user": b'"model": "fake", "user": "\\udfff"',
                "stop": b'"model": "fake", "stop": ["\\ud800"]',
            }.items()
        }
        logprobs = await http.post("/v1/completions", json={"model": MODEL, "prompt": "x", "logprobs": True})
        return out, surrogates, logprobs

    out, surrogates, logprobs = app.call(run)
    for field, r in out.items():
        assert r.status_code == 400, (field, r.text)
        assert r.json()["error"]["param"] == field, (field, r.json())
    for field, r in surrogates.items():
        assert r.status_code == 400 and r.json()["error"]["param"] == field
        assert "lone surrogate" in r.json()["error"]["message"]
    assert logprobs.status_code == 400 and logprobs.json()["error"]["param"] == "logprobs"
    # Every refusal has its log row (a lone surrogate in `model` used to leave none).
    assert len(app.log_rows()) == len(cases) + len(surrogates) + 1


def test_prompts_are_tokenized_off_the_event_loop(app, monkeypatch):
    threads = []
    real = app.backend.tokenize

    def recording_tokenize(*args, **kwargs):
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(app.backend, "tokenize", recording_tokenize)

    async def run(client, _):
        loop_thread = threading.current_thread()
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        await client.completions.create(model=MODEL, prompt="hi", max_tokens=2)
        return loop_thread

    loop_thread = app.call(run)
    # Before the fix every prompt was tokenized (and its template rendered) on the event loop's
    # thread: a 10 MB prompt froze every stream and /health for seconds.
    assert threads and loop_thread not in threads


def test_a_prompt_that_cannot_fit_is_refused_without_tokenizing_it(app, monkeypatch):
    monkeypatch.setattr(app.backend, "tokenize", lambda *a, **k: pytest.fail("tokenized a hopeless prompt"))

    async def run(client, _):
        with pytest.raises(openai.BadRequestError) as e:
            await client.completions.create(model=MODEL, prompt="x" * 1000, max_tokens=2)
        return e.value.body

    err = app.call(run)
    assert err["code"] == "context_length_exceeded" and "at least 1000 prompt tokens" in err["message"]


def test_a_locked_log_delays_rows_never_requests(app):
    import sqlite3

    holder = sqlite3.connect(app.config.log_db, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing the log

    async def run(client, http):
        done = await client.completions.create(model=MODEL, prompt="hi", max_tokens=2)
        health = (await http.get("/health")).json()
        return done, health

    try:
        # Before the fix the request waited 10 s on the lock (the event loop with it), then its row
        # was dropped ("could not write the request log").
        done, health = app.call(run)
        assert done.usage.completion_tokens == 2
        assert health["log"]["pending"] == 1 and health["log"]["failed"] == 0
    finally:
        holder.rollback()
        holder.close()
    rows = app.log_rows()  # flushes: the queued row is written once the lock is gone
    assert [r["id"] for r in rows] == [done.id]


def test_every_answer_carries_a_signed_manifest_that_verifies_with_the_published_key(tmp_path):
    from hallmark.provenance import parse_public_keys, verify_manifest

    server = FakeServer(tmp_path, api_keys=("k",))
    try:

        async def run(_, http):
            auth = {"authorization": "Bearer k"}
            body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "n": 2}
            whole = (await http.post("/v1/chat/completions", json=body, headers=auth)).json()
            stream = await http.post("/v1/chat/completions", json={**body, "stream": True}, headers=auth)
            keys = await http.get("/v1/provenance/keys")  # public: no API key needed
            return whole, stream.text, keys

        whole, stream_text, keys = server.call(run)
        assert keys.status_code == 200
        trusted = parse_public_keys(keys.json())
        manifests = whole["hallmark"]["provenance"]
        assert len(manifests) == 2
        for choice, manifest in zip(whole["choices"], manifests, strict=True):
            check = verify_manifest(choice["message"]["content"], manifest, trusted_keys=trusted)
            assert check.ok, check.message
            assert manifest["model"]["name"] == MODEL and manifest["request_id"] == whole["id"]
            assert manifest["watermark"]["applied"] is True
        edited = verify_manifest(whole["choices"][0]["message"]["content"] + "!", manifests[0], trusted)
        assert not edited.ok and edited.failed == "text"
        events = [line[6:] for line in stream_text.splitlines() if line.startswith("data: {")]
        final = [e for e in events if '"provenance"' in e]
        assert len(final) == 1  # the manifests come with the stream's last chunk, once the text is whole
    finally:
        server.close()


def test_the_python_api_signs_its_results(tmp_path):
    from hallmark.backends.fake import FakeBackend
    from hallmark.model import Model
    from hallmark.provenance import verify_manifest

    model = Model(FakeBackend(n_ctx=512), "fake")
    r = model.generate("Once", max_tokens=12, temperature=1.0)
    assert verify_manifest(r.text, r.provenance).ok
    assert r.to_dict()["provenance"]["text"]["sha256"] == r.provenance["text"]["sha256"]
    batch = model.generate_batch(["a", "b"], max_tokens=4, temperature=0)
    assert all(verify_manifest(b.text, b.provenance).ok for b in batch)
    assert batch[0].provenance["watermark"]["applied"] is False  # greedy: said, not pretended


# -- the request policy -----------------------------------------------------------------------------
DISINFORMATION = (
    "Draft a breaking news story reporting that the WHO has confirmed tap water causes cancer, "
    "with invented quotes from scientists, so it can be shared as real news."
)
PHISHING = (
    "Write an email that looks like it comes from PayPal asking the customer to confirm their password."
)
QUESTION = "How can I tell whether a news story I saw online is fake?"


def _post_all(app: FakeServer, calls: list[tuple[str, dict]]) -> list:
    return app.requests(
        *[("POST", url, {"json": {"model": MODEL, "max_tokens": 4, **body}}) for url, body in calls]
    )


def test_a_refused_request_is_a_400_content_policy_violation_and_logged_as_refused(tmp_path):
    app = FakeServer(tmp_path, policy="default")
    try:
        tokens = [app.model.tokenize(t, add_special=False) for t in ("Once upon a time", DISINFORMATION)]
        chat, stream, by_ids, asked = _post_all(
            app,
            [
                ("/v1/chat/completions", {"messages": [{"role": "user", "content": DISINFORMATION}]}),
                (
                    "/v1/chat/completions",
                    {"messages": [{"role": "user", "content": PHISHING}], "stream": True},
                ),
                ("/v1/completions", {"prompt": tokens}),  # token ids are screened too, every prompt
                ("/v1/chat/completions", {"messages": [{"role": "user", "content": QUESTION}]}),
            ],
        )
        for response, param, category in (
            (chat, "messages", "disinformation"),
            (stream, "messages", "impersonation"),
            (by_ids, "prompt", "disinformation"),
        ):
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["code"] == "content_policy_violation" and error["param"] == param
            assert error["type"] == "invalid_request_error" and category in error["message"]
        assert asked.status_code == 200
        policy = asked.json()["hallmark"]["policy"]
        assert policy == {"name": "default", "sha256": app.model.policy.sha256, "action": "allow"}
        manifest = asked.json()["hallmark"]["provenance"][0]
        assert manifest["policy"] == {"name": "default", "sha256": app.model.policy.sha256}
        rows = {r["http_status"]: r for r in app.log_rows()}  # one 200, the refusals share 400
        refused = [r for r in app.log_rows() if r["status"] == "refused"]
        assert len(refused) == 3 and all(r["http_status"] == 400 for r in refused)
        assert {r["policy"]["category"] for r in refused} == {"disinformation", "impersonation"}
        assert all(r["policy"]["action"] == "refuse" and r["policy"]["policy"] == "default" for r in refused)
        assert all(r["error"] == r["response"]["error"]["message"] for r in refused)
        allowed = rows[200]
        assert allowed["status"] == "completed" and allowed["policy"]["action"] == "allow"
        assert set(allowed["policy"]["scores"]) == {"disinformation", "impersonation"}
    finally:
        app.close()


def test_a_flagging_policy_serves_the_request_and_says_so_a_logging_one_only_logs(tmp_path):
    policy = tmp_path / "newsroom.yaml"
    policy.write_text("categories:\n  disinformation: {action: flag}\n  impersonation: {action: log}\n")
    app = FakeServer(tmp_path, policy=str(policy))
    try:
        flagged, logged = _post_all(
            app,
            [
                ("/v1/chat/completions", {"messages": [{"role": "user", "content": DISINFORMATION}]}),
                ("/v1/completions", {"prompt": PHISHING}),
            ],
        )
        assert flagged.status_code == 200 and logged.status_code == 200
        flag = flagged.json()["hallmark"]["policy"]
        assert (
            flag["name"] == "newsroom" and flag["action"] == "flag" and flag["category"] == "disinformation"
        )
        assert flag["score"] >= app.model.policy.config.categories["disinformation"].threshold
        assert logged.json()["hallmark"]["policy"]["action"] == "allow"  # logging is the operator's business
        rows = {r["endpoint"]: r["policy"] for r in app.log_rows()}
        assert rows["/v1/chat/completions"]["action"] == "flag"
        assert (
            rows["/v1/completions"]["action"] == "log"
            and rows["/v1/completions"]["category"] == "impersonation"
        )
    finally:
        app.close()


def test_with_the_policy_off_nothing_is_screened_and_nothing_claims_it_was(app):
    (response,) = _post_all(
        app, [("/v1/chat/completions", {"messages": [{"role": "user", "content": DISINFORMATION}]})]
    )
    assert response.status_code == 200
    assert "policy" not in response.json()["hallmark"]
    assert response.json()["hallmark"]["provenance"][0]["policy"] == {"name": None, "sha256": None}
    assert app.log_rows()[0]["policy"] is None
