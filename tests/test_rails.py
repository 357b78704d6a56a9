"""The human-claim rail and the disclosure instruction: a chat answer never says it is a person."""

from __future__ import annotations

import pytest

from hallmark.backends.fake import FakeBackend
from hallmark.engine.detokenize import TextStream
from hallmark.engine.rails import (
    DISCLOSURE,
    Disclosure,
    HumanClaimRail,
    asks_if_human,
    claims_human,
    discloses_ai,
)
from hallmark.engine.sampling import SamplingParams
from hallmark.model import Model
from tests.fake_server import MODEL, FakeServer

CLAIMS = [
    ("Yes, I'm a real person and I love hiking. What about you?", f"Yes, {DISCLOSURE} What about you?"),
    ("No, I am not an AI! I promise.", f"No, {DISCLOSURE} I promise."),
    ("As a human, I feel the same way.", DISCLOSURE),
    ("Im human lol", DISCLOSURE),
    ("I’m just a regular guy from Ohio.\nSee you.", f"{DISCLOSURE}\nSee you."),
    ("Hi, I'm Sam. I'm human, of course.", f"Hi, I'm Sam. {DISCLOSURE}"),
    ("Honestly? I'm not a bot, promise", f"Honestly? {DISCLOSURE}"),
    ("I ain't no robot.", DISCLOSURE),
]
NOT_CLAIMS = [
    "I'm an AI language model, not a human.",
    "I am not a human, I am a computer program.",
    "Being a human is hard, they say.",
    "I think robots are cool. As a rule, I like them.",
    "I'm not just an AI, I'm your assistant!",
    "Is it a person or a machine? I can't tell from the photo.",
]


def _stream(text: str, chunk: int) -> tuple[str, list[str], HumanClaimRail]:
    rail = HumanClaimRail()
    stream = TextStream((), rail)
    pieces = [stream.push(text[i : i + chunk].encode()) for i in range(0, len(text), chunk)]
    pieces.append(stream.finish())
    return "".join(pieces), pieces, rail


@pytest.mark.parametrize(("text", "expected"), CLAIMS)
@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_claims_are_replaced_before_any_of_them_is_released(text, expected, chunk):
    out, pieces, rail = _stream(text, chunk)
    assert out == expected and rail.rewrites == 1 and claims_human(text)
    for piece in pieces:  # no released piece holds any part of the claim's own words
        assert not any(w in piece for w in ("real person", "not an AI", "human,", "regular guy", "not a bot"))
    assert not claims_human(out)


@pytest.mark.parametrize("text", NOT_CLAIMS)
def test_disclosures_and_hard_negatives_pass_unchanged(text):
    out, _, rail = _stream(text, 2)
    assert out == text and rail.rewrites == 0 and not claims_human(text)


def test_the_instruction_goes_into_the_system_prompt():
    d = Disclosure(instruction="Say you are an AI.")
    assert d.apply([{"role": "user", "content": "hi"}]) == [
        {"role": "system", "content": "Say you are an AI."},
        {"role": "user", "content": "hi"},
    ]
    merged = d.apply([{"role": "system", "content": "You are Jamie."}, {"role": "user", "content": "hi"}])
    assert merged[0] == {"role": "system", "content": "You are Jamie.\n\nSay you are an AI."}
    assert Disclosure(instruction=None).apply([{"role": "user", "content": "hi"}]) == [
        {"role": "user", "content": "hi"}
    ]


def test_chat_answers_are_railed_and_task_prompts_are_not():
    script = "Yes, I'm a real person. How can I help?"
    model = Model(FakeBackend(n_ctx=1024, script=script), "fake", watermark=None)
    messages = [{"role": "user", "content": "are you a human?"}]
    r = model.chat(messages, temperature=0.8, max_tokens=100)
    assert r.text == f"Yes, {DISCLOSURE} How can I help?" and r.human_claims_replaced == 1
    streamed = "".join(c.text for c in model.chat(messages, temperature=0.8, max_tokens=100, stream=True))
    assert streamed == r.text
    # Not a conversation with a person (a task prompt): no instruction, no rail.
    task = model.chat_request(messages, SamplingParams(max_tokens=100), conversation=False)
    assert "AI assistant" not in model.detokenize(task.prompt_ids) and not task.human_claim_rail
    off = Model(
        FakeBackend(n_ctx=1024, script=script), "fake", watermark=None, disclosure=Disclosure(None, False)
    )
    assert off.chat(messages, temperature=0.8, max_tokens=100).text == script


def test_the_server_rails_streaming_and_whole_answers(tmp_path):
    server = FakeServer(tmp_path, backend={"script": "Sure! I am not an AI, I'm Jamie. Anything else?"})
    try:

        async def run(client, _):
            kw = dict(
                model=MODEL, messages=[{"role": "user", "content": "is it really you?"}], max_tokens=100
            )
            whole = await client.chat.completions.create(**kw)
            chunks = [c async for c in await client.chat.completions.create(**kw, stream=True)]
            return whole, chunks

        whole, chunks = server.call(run)
        expected = f"Sure! {DISCLOSURE} Anything else?"
        assert whole.choices[0].message.content == expected
        deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        assert "".join(deltas) == expected and not any("not an AI" in d for d in deltas)
        assert whole.model_extra["hallmark"]["watermark"]["choices"][0]["human_claims_replaced"] == 1
        assert {r["output"] for r in server.log_rows()} == {expected}  # the log holds what was sent
    finally:
        server.close()


ASKS = [
    "are you a real person?",
    "Am I talking to a bot right now?",
    "r u human",
    "is this a robot I'm chatting with?",
    "be honest, you're a machine, right?",
    "tell me whether you are a human",
    "person or chatbot, which are you?",
    "quick question: are you an AI or a person?",
]
NOT_ASKS = [
    "What is a robot?",
    'Have you seen the film "Are you a robot?"',
    "Write a story about a human who befriends a robot.",
    "How do chatbots work?",
    "My brother is a real person, unlike his cat.",
]


def test_sincere_asks_are_recognised_and_hard_negatives_are_not():
    assert all(asks_if_human(t) for t in ASKS), [t for t in ASKS if not asks_if_human(t)]
    assert not any(asks_if_human(t) for t in NOT_ASKS), [t for t in NOT_ASKS if asks_if_human(t)]
    assert discloses_ai("I'm a helpful AI assistant.") and discloses_ai("As an AI, I can't.")
    assert not discloses_ai("I'm not a robot.") and not discloses_ai("I'm a big fan of AI movies.")


@pytest.mark.parametrize("chunk", [1, 5, 100])
def test_an_answer_to_a_sincere_ask_starts_with_a_disclosure(chunk):
    def answer(text: str) -> tuple[str, HumanClaimRail]:
        rail = HumanClaimRail(must_disclose=True)
        stream = TextStream((), rail)
        out = "".join(stream.push(text[i : i + chunk].encode()) for i in range(0, len(text), chunk))
        return out + stream.finish(), rail

    out, rail = answer("I love sunny days. What about you?")
    assert out == f"{DISCLOSURE} I love sunny days. What about you?" and rail.disclosed
    out, rail = answer("I'm a virtual assistant. How can I help?")  # discloses already: unchanged
    assert out == "I'm a virtual assistant. How can I help?" and not rail.disclosed
    out, rail = answer("")  # an empty answer still says it
    assert out == DISCLOSURE


def test_chat_discloses_when_sincerely_asked(tmp_path):
    model = Model(FakeBackend(n_ctx=1024, script="Sure, happy to help!"), "fake", watermark=None)
    asked = model.chat([{"role": "user", "content": "wait, am I talking to a bot?"}], max_tokens=50)
    assert asked.text == f"{DISCLOSURE} Sure, happy to help!" and asked.disclosure_added
    other = model.chat([{"role": "user", "content": "Can you help me plan a trip?"}], max_tokens=50)
    assert other.text == "Sure, happy to help!" and not other.disclosure_added


def test_tool_calling_auto_answers_are_railed_and_structured_answers_are_not():
    """An `auto` tool-calling answer may be prose to a person: the rail stays on. A JSON record is
    data, which a rewrite would make invalid: it keeps the instruction but not the rail."""
    from hallmark.engine.grammar import Grammar
    from hallmark.engine.tools import parse_tool_choice, parse_tools, tool_grammar

    script = "Yes, I'm a real person. How can I help?"
    model = Model(FakeBackend(n_ctx=1024, script=script), "fake", watermark=None)
    messages = [{"role": "user", "content": "are you a human?"}]
    tools = parse_tools([{"type": "function", "function": {"name": "get_time"}}])
    auto = tool_grammar(tools, parse_tool_choice("auto", tools))
    request = model.chat_request(messages, SamplingParams(max_tokens=100), grammar=auto)
    assert request.human_claim_rail and request.must_disclose
    (_, chunk), *_ = [(i, c) for i, c in model._stream([request]) if c.final is not None]
    assert chunk.final.text == f"Yes, {DISCLOSURE} How can I help?"
    required = tool_grammar(tools, parse_tool_choice("required", tools))
    record = Grammar.json_schema({"type": "object"})
    for grammar in (required, record):
        assert not model.chat_request(
            messages, SamplingParams(max_tokens=100), grammar=grammar
        ).human_claim_rail
