"""Structured output in `hallmark serve`: response_format (json_object, json_schema) and the grammar
extension, on a real server of SmolLM2 driven by the official openai client; bad schemas and
grammars are refused before any token."""

from __future__ import annotations

import json
import time

import jsonschema
import openai
import pydantic
import pytest

from hallmark.requestlog import RequestLog
from tests.server_process import start_server

MODEL = "smollm2-135m-instruct"

# Nested objects, an array of enums, required fields, bounded strings (so SmolLM2 stays short).
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "country": {"type": "string", "maxLength": 20},
            },
            "required": ["city"],
        },
        "hobbies": {
            "type": "array",
            "items": {"enum": ["chess", "music", "running", "reading"]},
            "minItems": 1,
            "maxItems": 2,
        },
    },
    "required": ["name", "age", "address", "hobbies"],
}


# One thread: on a shared 2-core machine llama.cpp's two threads wait for each other whenever one is
# preempted, and decoding fell from ~50 to ~1 token/s; one thread ran ~68 tokens/s throughout.
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(
        MODEL,
        "--parallel",
        "2",
        "--ctx-size",
        "1024",
        "--threads",
        "1",
        log_db=tmp_path_factory.mktemp("s") / "l.db",
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def logged(server, request_id: str | None = None, match=None) -> dict:
    """A row of the request log: the request's, or the newest one that `match`es (the server writes
    rows from a queue, just after replying)."""
    log = RequestLog(server.log_db)
    try:
        for _ in range(200):
            rows = log.recent(5)
            found = [r for r in rows if r["id"] == request_id or (match is not None and match(r))]
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no log row for {request_id or match}")
    finally:
        log.close()


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_json_object_is_a_json_object_and_still_watermarked(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=ask("Describe a cat as a JSON object with two keys: name and colour."),
        response_format={"type": "json_object"},
        max_tokens=200,
        seed=3,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    assert isinstance(json.loads(choice.message.content), dict)
    # Sampled constrained output carries the watermark like any answer.
    mark = r.model_extra["hallmark"]["watermark"]
    assert mark["applied"] is True and mark["choices"][0]["watermarked_tokens"] > 0


def test_json_schema_nested_arrays_enums_required_and_the_log(client, server):
    r = client.chat.completions.create(
        model=MODEL,
        messages=ask("Invent a person: name, age, city and hobbies."),
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
        max_tokens=150,
        temperature=0.7,
        seed=11,
    )
    assert r.choices[0].finish_reason == "stop"
    value = json.loads(r.choices[0].message.content)
    jsonschema.validate(value, PERSON)
    assert set(value) <= set(PERSON["properties"])  # listed properties only: objects are closed
    row = logged(server, r.id)
    assert row["params"]["response_format"]["json_schema"]["schema"] == PERSON
    assert row["status"] == "completed" and row["output"] == r.choices[0].message.content


def test_pydantic_parse_with_the_official_client(client):
    class City(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=20)
        country: str = pydantic.Field(max_length=20)
        population_millions: int = pydantic.Field(ge=0, le=99)  # bounded: a float could run on

    r = client.chat.completions.parse(
        model=MODEL, messages=ask("Give me a large city."), response_format=City, max_tokens=80, seed=5
    )
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, City) and parsed.name


def test_max_tokens_cutting_the_json_reports_length(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=ask("Invent a person."),
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
        max_tokens=6,
        seed=1,
    )
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 6
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.choices[0].message.content)


def test_stream_of_a_schema_answer_joins_to_the_same_json(client):
    kwargs = dict(
        model=MODEL,
        messages=ask("Invent a person."),
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
        max_tokens=150,
        seed=11,
        temperature=0.7,
    )
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(**kwargs, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]


def test_completions_take_response_format_and_a_grammar(client):
    r = client.completions.create(
        model=MODEL,
        prompt="A JSON object describing Paris:",
        max_tokens=60,
        seed=2,
        extra_body={
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "place",
                    "schema": {
                        "type": "object",
                        "properties": {
                            "city": {"type": "string", "maxLength": 15},
                            "french": {"type": "boolean"},
                        },
                        "required": ["city", "french"],
                    },
                },
            }
        },
    )
    value = json.loads(r.choices[0].text)
    assert set(value) == {"city", "french"} and isinstance(value["french"], bool)
    # llama-server's grammar field, GBNF and Lark.
    for grammar in ('root ::= "yes" | "no"', 'start: "yes" | "no"'):
        r = client.completions.create(
            model=MODEL, prompt="Is Paris in France?", max_tokens=5, extra_body={"grammar": grammar}
        )
        assert r.choices[0].text in ("yes", "no") and r.choices[0].finish_reason == "stop"


def test_chat_grammar_extension(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=ask("Pick a number from 1 to 9."),
        max_tokens=5,
        extra_body={"grammar": "root ::= [1-9]"},
    )
    assert r.choices[0].message.content in "123456789" and len(r.choices[0].message.content) == 1


@pytest.mark.parametrize(
    ("fields", "param", "code", "words"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "nope"}},
                }
            },
            "response_format",
            "invalid_json_schema",
            "nope",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"$ref": "#/missing"}},
                }
            },
            "response_format",
            "invalid_json_schema",
            "missing",
        ),
        ({"grammar": 'root ::= "a" ('}, "grammar", "invalid_grammar", "does not parse"),
        ({"grammar": "start: undefined_rule"}, "grammar", "invalid_grammar", "undefined_rule"),
        (
            {"grammar": 'root ::= "a"', "response_format": {"type": "json_object"}},
            "grammar",
            "invalid_value",
            "cannot be combined",
        ),
        ({"response_format": {"type": "json_schema"}}, "response_format", "invalid_value", "json_schema"),
        ({"response_format": {"type": "xml"}}, "response_format.type", "invalid_value", "json_schema"),
    ],
)
def test_bad_formats_are_400s_before_any_token(client, server, fields, param, code, words):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=ask("Hi"), max_tokens=4, extra_body=fields)
    assert e.value.param == param and e.value.code == code
    assert words in e.value.message
    # Refused before generation: the log's row has no completion tokens.
    row = logged(server, match=lambda r: r["http_status"] == 400 and words in (r["error"] or ""))
    assert not row["completion_tokens"] and row["output"] is None
