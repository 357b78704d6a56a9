"""Serving a base model and its LoRA adapters at once: one loaded model, one engine thread, one
continuous batch, a served name per adapter. The logic on the fake backend in-process; then a real
`hallmark serve` on SmolLM2 with the official openai client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import httpx
import openai
import pytest

from hallmark import registry
from hallmark.backends.fake import FakeBackend
from hallmark.model import Model
from hallmark.registry import RegistryEntry
from hallmark.requestlog import RequestLog
from hallmark.server.app import build_state, create_app
from hallmark.server.config import ServerConfig
from tests.conftest import run_cli
from tests.lora_files import write_fake_lora
from tests.server_process import start_server

BASE = "smollm2-135m-instruct"


# -- the logic, on the fake backend -----------------------------------------------------------------
def test_a_base_and_its_adapter_share_one_engine_and_one_batch(tmp_path):
    backend = FakeBackend(n_ctx=256, max_sequences=4)
    base = Model(backend, "fake")
    tuned = base.with_adapters(write_fake_lora(tmp_path / "tuned.gguf"), name="tuned")
    assert tuned.adapter_set and base.adapter_set == ()
    # A burst of arrivals is admitted together (--batch-wait), so the four requests share every step.
    config = ServerConfig(log_db=str(tmp_path / "log.db"), batch_wait_ms=50)
    state = build_state([base, tuned], config)
    try:
        engines = state.engines
        assert (
            engines["tuned"].scheduler is engines["fake"].scheduler
            and engines["tuned"].owner is engines["fake"]
        )
        threads = [t for t in threading.enumerate() if t.name.startswith("hallmark-engine-")]
        assert [t.name for t in threads] == ["hallmark-engine-fake"]

        async def main(calls):
            transport = httpx.ASGITransport(app=create_app(state))
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
                client = openai.AsyncOpenAI(base_url="http://localhost/v1", api_key="x", http_client=http)
                listed = await client.models.list()

                async def one(model):
                    r = await client.completions.create(
                        model=model, prompt="ab", max_tokens=12, temperature=0
                    )
                    return r.choices[0].text

                return listed, await asyncio.gather(*(one(m) for m in calls))

        listed, alone = asyncio.run(main(["fake", "tuned"]))
        assert [(m.id, m.model_extra["root"], m.model_extra["parent"]) for m in listed.data] == [
            ("fake", "fake", None),
            ("tuned", "fake", "fake"),
        ]
        assert alone[0] != alone[1]  # the adapter changes the output
        backend.calls.clear()
        _, together = asyncio.run(main(["fake", "tuned", "fake", "tuned"]))
        assert together == alone * 2
        # The four sequences, two adapter sets, decoded in the same backend calls.
        assert max(len(call) for call in backend.calls) == 4
        assert state.request_log.flush(10)
        log = RequestLog(config.log_db)
        try:
            assert sorted(r["model"] for r in log.recent(10)) == ["fake"] * 3 + ["tuned"] * 3
        finally:
            log.close()
    finally:
        for engine in state.engines.values():
            engine.stop()
        state.request_log.close()


def test_a_served_name_may_not_be_another_models_alias(tmp_path):
    base = Model(FakeBackend(n_ctx=64), "smollm2-135m-instruct")
    clash = base.with_adapters(write_fake_lora(tmp_path / "a.gguf"), name="smollm2")
    with pytest.raises(
        Exception, match="smollm2 cannot be a served name: it is another name of smollm2-135m"
    ):
        build_state([base, clash], ServerConfig(log_requests=False))


# -- the real server --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2_lora):
    """SmolLM2 served with the adapter twice: by --lora, and by a registered name."""
    data = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HALLMARK_DATA_DIR", str(data))
        registry.register(RegistryEntry(name="reg-tuned", base="smollm2", adapter=str(smollm2_lora)))
        log_db = tmp_path_factory.mktemp("lora-serve") / "logs.db"
        srv = start_server(
            "-m",
            "smollm2",
            "reg-tuned",
            "--lora",
            f"tuned={smollm2_lora}",
            "--parallel",
            "4",
            "--ctx-size",
            "512",
            log_db=log_db,
        )
    yield srv
    srv.stop()


def _chat(client: openai.OpenAI, model: str) -> str:
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Name three rivers."}],
        max_tokens=16,
        temperature=0,
    )
    assert r.model == model
    return r.choices[0].message.content


def test_the_server_lists_the_base_and_its_adapters(server):
    models = server.client().models.list().data
    assert [m.id for m in models] == [BASE, "reg-tuned", "tuned"]
    parents = {m.id: (m.model_extra["root"], m.model_extra["parent"]) for m in models}
    assert parents == {BASE: (BASE, None), "reg-tuned": (BASE, BASE), "tuned": (BASE, BASE)}
    assert models[2].model_extra["hallmark"]["adapters"] == [{"name": "smol-tuned", "scale": 1.0}]
    health = httpx.get(server.url + "/health", timeout=10).json()
    assert set(health["models"]) == {BASE, "reg-tuned", "tuned"}


def test_concurrent_requests_to_the_base_and_the_adapter_match_each_alone(server):
    client = server.client()
    alone = {m: _chat(client, m) for m in (BASE, "tuned", "reg-tuned")}
    assert alone["tuned"] != alone[BASE] and alone["reg-tuned"] == alone["tuned"]
    order = [BASE, "tuned", "reg-tuned", BASE]  # four slots: one batch
    with concurrent.futures.ThreadPoolExecutor(len(order)) as pool:
        together = list(pool.map(lambda m: _chat(client, m), order))
    assert together == [alone[m] for m in order]
    # The manifest of an adapter's answer names the adapter; the request log, the served name.
    r = client.completions.create(model="tuned", prompt="Rivers", max_tokens=4, temperature=0)
    manifest = r.model_extra["hallmark"]["provenance"][0]
    assert manifest["model"]["name"] == "tuned" and manifest["model"]["adapters"][0]["name"] == "smol-tuned"
    expected = {BASE: 3, "tuned": 3, "reg-tuned": 2}
    deadline = time.monotonic() + 30
    while True:  # the server writes its log from a queue: the last rows may take a moment
        log = RequestLog(server.log_db)
        try:
            logged = [row["model"] for row in log.recent(50)]
        finally:
            log.close()
        counts = {name: logged.count(name) for name in expected}
        if counts == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert counts == expected


def test_an_adapter_no_served_model_can_run_stops_the_server_at_start(gemma_lora, tmp_path):
    for lora, message in (
        (f"wrong={gemma_lora}", "gemma-tuned.gguf was trained on a base model (sha256"),
        (f"gone={tmp_path / 'nope.gguf'}", "LoRA adapter not found"),
    ):
        proc = run_cli("serve", "smollm2", "--lora", lora, "--port", "0", "--ctx-size", "64", timeout=60)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr
