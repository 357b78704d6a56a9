import pytest

from hallmark import InvalidSamplingError, SamplingParams


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("temperature", -0.1, "temperature must be >= 0"),
        ("temperature", float("nan"), "temperature must be a finite number"),
        ("top_p", 0.0, "top_p must be in (0, 1]"),
        ("top_p", 1.5, "top_p must be in (0, 1]"),
        ("min_p", -0.1, "min_p must be in [0, 1]"),
        ("top_k", -1, "top_k must be an integer >= 0"),
        ("repetition_penalty", 0.0, "repetition_penalty must be in [0.01, 100.0]"),
        ("repetition_penalty", 5e-324, "repetition_penalty must be in [0.01, 100.0]"),
        ("presence_penalty", 2.5, "presence_penalty must be in [-2, 2]"),
        ("frequency_penalty", -3.0, "frequency_penalty must be in [-2, 2]"),
        ("max_tokens", 0, "max_tokens must be an integer >= 1"),
        ("seed", -5, "seed must be an integer >= 0"),
        ("logprobs", 21, "logprobs must be an integer in [0, 20]"),
        ("stop", ("",), "stop strings must be non-empty strings"),
        ("logit_bias", {5: 101.0}, "logit_bias values must be numbers in [-100, 100]"),
        ("logit_bias", {-1: 1.0}, "logit_bias keys must be token ids"),
    ],
)
def test_invalid_values_raise_specific_error(field, value, message):
    with pytest.raises(InvalidSamplingError) as excinfo:
        SamplingParams(**{field: value})
    assert message in str(excinfo.value)


def test_unknown_option_is_an_error_not_ignored():
    with pytest.raises(InvalidSamplingError, match="unknown sampling option.*temprature"):
        SamplingParams().with_overrides(temprature=0.5)


def test_single_stop_string_becomes_tuple():
    assert SamplingParams(stop="\n").stop == ("\n",)
    assert SamplingParams(temperature=0).greedy
    assert not SamplingParams(temperature=0.1).greedy


def test_params_are_hashable_and_immutable_even_with_a_logit_bias():
    bias = {5: 2.0, 7: -100.0}
    p = SamplingParams(logit_bias=bias, stop=["a"])
    # Before the fix: TypeError: unhashable type: 'dict' (the dataclass is frozen, its dict was not).
    assert hash(p) == hash(SamplingParams(logit_bias={7: -100.0, 5: 2.0}, stop=("a",)))
    assert {p: "cached"}[SamplingParams(logit_bias=dict(bias), stop=("a",))] == "cached"
    bias[5] = 99.0  # the caller's dict changing later changes nothing
    assert p.logit_bias[5] == 2.0 and dict(p.logit_bias) == {5: 2.0, 7: -100.0}
    with pytest.raises(TypeError):
        p.logit_bias[5] = 1.0  # type: ignore[index]
    assert p != SamplingParams(logit_bias={5: 2.5, 7: -100.0}, stop=("a",))
    with pytest.raises(InvalidSamplingError, match="mapping"):
        SamplingParams(logit_bias=[(5, 2.0)])  # type: ignore[arg-type]


def test_errors_name_their_field_and_tiny_temperatures_are_greedy():
    with pytest.raises(InvalidSamplingError) as e:
        SamplingParams(top_p=2.0)
    assert e.value.param == "top_p"
    # A temperature of 5e-324 made every scaled logit infinite and killed the server's engine thread.
    assert SamplingParams(temperature=5e-324).greedy and SamplingParams(temperature=0).greedy
    assert not SamplingParams(temperature=1e-5).greedy
