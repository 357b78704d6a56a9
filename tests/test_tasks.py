"""Translation, summarization and question answering: metrics, prompts, CLI and an end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import hallmark
from hallmark.engine.sampling import SamplingParams
from hallmark.tasks import UnknownLanguageError, answer, metrics, summarize, translate
from hallmark.tasks.evaluate import EvalDataError, evaluate, load_examples
from hallmark.tasks.languages import language_code
from hallmark.tasks.prompts import (
    SUMMARY_SHOTS,
    TaskPrompt,
    first_sentences,
    qa_prompt,
    summary_prompt,
    translation_prompt,
)
from hallmark.tasks.runner import pack, run_prompts
from tests.conftest import run_cli

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# -- metrics, against hand-computed values ------------------------------------------------------------
def test_squad_normalization_and_scores():
    assert metrics.normalize_answer("The  Nieuwe Maas!") == "nieuwe maas"
    assert metrics.normalize_answer("an Apple, a pear") == "apple pear"
    assert metrics.exact_match("the Noord River.", ["Nieuwe Maas", "Noord River"]) == 1.0
    assert metrics.exact_match("Noord", ["Noord River"]) == 0.0
    # "river noord" vs "noord river": 2 common tokens, precision 2/2, recall 2/2.
    assert metrics.f1("river Noord", ["Noord River"]) == 1.0
    # "in the noord" -> ["in", "noord"] vs ["noord", "river"]: 1 common, P = 1/2, R = 1/2, F1 = 1/2.
    assert metrics.f1("in the Noord", ["Noord River"]) == pytest.approx(0.5)
    # The best of several answers counts: 0 for the first, 2/3 for the second (P 1, R 1/2).
    assert metrics.f1("Maas", ["Lek", "Nieuwe Maas"]) == pytest.approx(2 / 3)
    scores = metrics.squad(["Noord River", "Lek"], [["Noord River"], ["Rhine"]])
    assert scores == {"exact_match": 50.0, "f1": 50.0}


def test_bleu_and_chrf():
    perfect = metrics.bleu_chrf(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["chrf"] == pytest.approx(100.0)
    # 6-word hypothesis against a 6-word reference, all words wrong: every n-gram precision is 0.
    assert metrics.bleu_chrf(["a b c d e f"], ["the cat sat on the mat"])["bleu"] == 0.0
    # Hand-computed: hypothesis "the cat sat on the rug", 5/6 unigrams, 4/5 bigrams, 3/4 trigrams,
    # 2/3 four-grams, same length: BLEU = (5/6 * 4/5 * 3/4 * 2/3)^(1/4) = (1/3)^(1/4) = 0.7598.
    partial = metrics.bleu_chrf(["the cat sat on the rug"], ["the cat sat on the mat"])
    assert partial["bleu"] == pytest.approx(100 * (1 / 3) ** 0.25, abs=0.01)
    assert 0 < partial["chrf"] < 100


def test_rouge():
    same = metrics.rouge(["the cat sat"], ["the cat sat"])
    assert same == {
        "rouge1": pytest.approx(100.0),
        "rouge2": pytest.approx(100.0),
        "rougeL": pytest.approx(100.0),
    }
    # "the cat ran" vs "the cat sat": unigrams 2/3 both ways -> F 66.7; bigrams 1/2 -> 50.
    partial = metrics.rouge(["the cat ran"], ["the cat sat"])
    assert partial["rouge1"] == pytest.approx(200 / 3) and partial["rouge2"] == pytest.approx(50.0)


# -- prompts and helpers ------------------------------------------------------------------------------
def test_language_codes():
    assert language_code("FR") == "fr" and language_code("French") == "fr" and language_code("pt-BR") == "pt"
    with pytest.raises(UnknownLanguageError, match="unknown language 'xx'"):
        language_code("xx")


def test_fewshot_translation_prompt_for_base_models():
    p = translation_prompt("Good night.", "en", "de", "fewshot-3")
    assert p.text is not None and p.messages is None and p.stop == ("\n",)
    assert p.text.count("English: ") == 4 and p.text.count("German:") == 4
    assert p.text.endswith("English: Good night.\nGerman:")
    # Run-on continuations are cut: only the first line, without an echoed label or quotes.
    assert p.clean(' "Gute Nacht."\nEnglish: Thank you\nGerman: Danke') == "Gute Nacht."
    assert p.clean("German: Gute Nacht.") == "Gute Nacht."


def test_chat_prompts_for_instruct_models():
    p = translation_prompt("Good night.", "en", "fr", "chat")
    assert p.messages is not None and p.messages[-1]["role"] == "user"
    assert "French" in p.messages[-1]["content"] and p.messages[-1]["content"].endswith("Good night.")
    shots = translation_prompt("Good night.", "en", "fr", "chat-fewshot-3").messages
    assert shots is not None and [m["role"] for m in shots] == ["user", "assistant"] * 3 + ["user"]
    q = qa_prompt("Who?", "Marie went home.", "chat")
    assert q.clean("Answer: Marie.\nShe went home because...") == "Marie"
    s = summary_prompt("Some article.", "fewshot-1", sentences=1)
    assert s.text is not None and s.text.endswith("Article: Some article.\nSummary in one sentence:")
    assert s.clean("It rained. Then it stopped.") == "It rained."


def test_naive_prompts_have_no_examples_and_no_cleanup():
    p = translation_prompt("Good night.", "en", "fr", "naive")
    assert p.stop == () and "English:" not in (p.text or "")
    assert p.clean("  Bonne nuit.\nEnglish: more ") == "Bonne nuit.\nEnglish: more"


def test_fewshot_summary_rejects_a_copied_example_and_falls_back_to_zero_shot():
    # gemma-3-270m copied the example's summary for 49 of 300 xsum documents and ended the line at
    # once for 19 (bench/tasks.py, before this check).
    p = summary_prompt("The mayor opened a new bridge over the river on Friday.", "fewshot-1")
    example = SUMMARY_SHOTS[0]["summary"]
    assert not p.usable(example)
    assert not p.usable(example.replace("4,000", "5,000").replace("town's", "city's"))
    assert not p.usable("")
    assert p.usable("The mayor has opened a new bridge over the river.")
    assert p.fallback is not None and "Summarize the following text" in (p.fallback.text or "")
    assert "Article:" not in (p.fallback.text or "")  # zero-shot: no example to copy
    assert p.fallback.clean("Summary: One. Two. Three.") == "One."  # with the same clean-up


def test_fewshot_qa_falls_back_to_the_plain_question_on_an_empty_answer():
    # The few-shot QA prompt left 2 of 300 squad answers empty on gemma-3-270m, 1 on SmolLM2.
    p = qa_prompt("Who went home?", "Marie went home.", "fewshot-1")
    assert not p.usable("") and p.usable("Marie")
    assert p.fallback is not None and p.fallback.stop == ("\n",)
    assert p.fallback.text == "Marie went home.\n\nQuestion: Who went home?\nAnswer:"
    assert p.fallback.clean(" Marie.\nQuestion: more") == "Marie"  # the same clean-up
    assert qa_prompt("Who?", None, "fewshot-3").fallback.text == "Who?\nAnswer:"  # open questions too


def test_run_prompts_replaces_unusable_output_with_the_fallbacks(smollm2):
    fallback = TaskPrompt(text="The capital of France is", clean=lambda out: "fallback:" + out.strip())
    rejected = TaskPrompt(text="One, two, three,", usable=lambda out: False, fallback=fallback)
    accepted = TaskPrompt(text="One, two, three,", fallback=fallback)  # non-empty output is usable
    params = SamplingParams(temperature=0)
    (text_r, gen_r), (text_a, _) = run_prompts(smollm2, [rejected, accepted], params, [4, 4])
    assert text_r.startswith("fallback:") and text_r == "fallback:" + gen_r.text.strip()
    assert not text_a.startswith("fallback:")


def test_pack_groups_sentences_and_never_drops_text():
    pieces = ["one two three.", "four five.", "six seven eight nine ten eleven."]
    groups = pack(pieces, lambda text: len(text.split()) <= 5)
    assert " ".join(groups).split() == " ".join(pieces).split()
    assert all(len(g.split()) <= 5 for g in groups)
    assert first_sentences("A b. C d! E f? G", 2) == "A b. C d!"


# -- the Python API on the real model -----------------------------------------------------------------
def test_translate_keeps_line_alignment(smollm2):
    text = "Good morning.\n\nWhere is the station?\nThank you."
    out = translate(text, "fr", model=smollm2)
    lines = out.text.split("\n")
    assert len(lines) == 4 and lines[1] == ""
    assert all(line.strip() for i, line in enumerate(lines) if i != 1)
    assert out.parts == 3 and not out.watermarked  # greedy by default: reported as unwatermarked
    assert out.to_dict()["watermark"]["reason"].startswith("greedy")


def test_long_inputs_are_split_not_truncated(gemma):
    # gemma is loaded with a 1024-token window in the tests: this text needs several parts.
    sentences = [
        f"Sentence number {i} says that the river is {i} metres deep near the old mill." for i in range(160)
    ]
    document = " ".join(sentences)
    assert len(gemma.tokenize(document)) > gemma.n_ctx
    result = summarize(document, "short", model=gemma, max_tokens=24)
    assert result.parts > 2 and result.text
    found = answer("How deep is the river in sentence 150?", document, model=gemma)
    assert found.parts > 1


def test_bad_input_gives_clear_errors(smollm2):
    with pytest.raises(UnknownLanguageError):
        translate("Hello", "klingon", model=smollm2)
    with pytest.raises(hallmark.PromptError, match="empty"):
        translate("   ", "fr", model=smollm2)
    with pytest.raises(hallmark.PromptError, match="empty"):
        answer("", model=smollm2)
    with pytest.raises(hallmark.PromptError, match="summary length"):
        summarize("Some text.", "tiny", model=smollm2)


# -- evaluation ---------------------------------------------------------------------------------------
def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_data_errors(tmp_path):
    with pytest.raises(EvalDataError, match="no such file"):
        load_examples("qa", tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "x", "question": "y", "answers": ["z"]}\n{oops\n')
    with pytest.raises(EvalDataError, match=r"bad.jsonl:2: not valid JSON"):
        load_examples("qa", bad)
    missing = _write_jsonl(tmp_path / "m.jsonl", [{"source": "Hi"}])
    with pytest.raises(EvalDataError, match="missing field reference"):
        load_examples("translation", missing)


# Used when ../shared/data is not there (the dev sets are not part of the repository).
FALLBACK = {
    "translation": [
        {"source_lang": "en", "target_lang": "fr", "source": s, "reference": r}
        for s, r in [
            ("I am tired.", "Je suis fatigué."),
            ("The door is open.", "La porte est ouverte."),
            ("We eat bread.", "Nous mangeons du pain."),
            ("Where is my bag?", "Où est mon sac ?"),
            ("It is raining today.", "Il pleut aujourd'hui."),
        ]
    ],
    "summarization": [
        {"document": d, "summary": s}
        for d, s in [
            (
                "The bakery on King Street will close next month after 40 years. The owner is retiring. "
                "Customers said they would miss the bread.",
                "A bakery is closing after 40 years because its owner is retiring.",
            ),
            (
                "Heavy rain flooded roads across the county on Monday. Schools closed early and buses were "
                "cancelled. The rain is expected to stop by Wednesday.",
                "Floods closed schools and cancelled buses across a county.",
            ),
            (
                "A new bridge over the river opened on Friday. It took three years to build and cost 20 "
                "million pounds. It will cut journey times by ten minutes.",
                "A 20 million pound bridge has opened after three years of building.",
            ),
            (
                "The city zoo welcomed a baby giraffe this week. Keepers said mother and calf are healthy. "
                "Visitors can see them from next Saturday.",
                "A zoo has a new baby giraffe, which visitors can see from Saturday.",
            ),
            (
                "Local runners raised 5,000 pounds for the hospital in a charity race on Sunday. More than "
                "300 people took part despite the cold.",
                "A charity race raised 5,000 pounds for a hospital.",
            ),
        ]
    ],
    "qa": [
        {"context": c, "question": q, "answers": a}
        for c, q, a in [
            ("Anna was born in Vienna in 1950 and later moved to Rome.", "Where was Anna born?", ["Vienna"]),
            ("The lake is 30 metres deep and freezes every winter.", "How deep is the lake?", ["30 metres"]),
            ("Tom bought a red bicycle from his neighbour.", "What colour is the bicycle?", ["red"]),
            (
                "The museum opens at nine and closes at five.",
                "When does the museum open?",
                ["at nine", "nine"],
            ),
            ("Oslo is the capital of Norway.", "What is the capital of Norway?", ["Oslo"]),
        ]
    ],
}
DEV_SETS = {
    "translation": DATA / "translation" / "tatoeba.en-fr.jsonl",
    "summarization": DATA / "summarization" / "xsum.dev300.jsonl",
    "qa": DATA / "qa" / "squad.dev300.jsonl",
}


@pytest.mark.parametrize("task", ["translation", "summarization", "qa"])
def test_eval_end_to_end_on_five_examples(smollm2, tmp_path, task):
    data = DEV_SETS[task]
    if not data.exists():
        data = _write_jsonl(tmp_path / f"{task}.jsonl", FALLBACK[task])
    summary = evaluate(task, data, smollm2, limit=5, out=tmp_path / task, progress=False)
    assert summary["examples"] == 5 and summary["empty_predictions"] == 0
    rows = [json.loads(line) for line in Path(summary["predictions_file"]).read_text().splitlines()]
    assert len(rows) == 5
    for row in rows:
        pred = row["prediction"]
        assert pred.strip() and pred == pred.strip()
        # No run-on: no new few-shot turn or echoed label inside the answer.
        assert not any(marker in pred for marker in ("\nEnglish:", "Question:", "Context:", "Article:"))
        if task != "summarization":
            assert "\n" not in pred
    assert json.loads(Path(summary["summary_file"]).read_text())["metrics"] == summary["metrics"]


# -- CLI ----------------------------------------------------------------------------------------------
def test_cli_translate_a_file_keeps_its_line_count(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("Good morning.\nI am hungry.\n\nSee you tomorrow.\n")
    r = run_cli("translate", "--to", "es", str(src), timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 4 and r.stdout.split("\n")[2] == ""


def test_cli_task_errors_are_one_line(tmp_path):
    r = run_cli("translate", "--to", "xx", "Hello")
    assert r.returncode != 0 and "unknown language 'xx'" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("summarize", str(tmp_path / "nope.txt"))
    assert r.returncode != 0 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("ask", "Who?", "--context", str(tmp_path / "nope.txt"))
    assert r.returncode != 0 and "cannot read" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("eval", "qa", "--data", str(tmp_path / "nope.jsonl"))
    assert r.returncode != 0 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("translate", "--to", "fr", "-", stdin="   \n")
    assert r.returncode != 0 and "empty" in r.stderr


def test_cli_ask_json(tmp_path):
    ctx = tmp_path / "ctx.txt"
    ctx.write_text("The Eiffel Tower was finished in 1889 for the World's Fair in Paris.")
    r = run_cli("ask", "When was the Eiffel Tower finished?", "--context", str(ctx), "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "1889" in out["text"] and out["style"] and out["watermark"]["applied"] is False
