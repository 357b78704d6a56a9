from hallmark.engine.detokenize import TextStream


def _feed(stream, pieces):
    out = [stream.push(p) for p in pieces]
    return out, stream.finish()


def test_multibyte_character_split_across_tokens_is_never_released_half():
    euro = "€".encode()  # 3 bytes
    s = TextStream()
    assert s.push(b"price: ") == "price: "
    assert s.push(euro[:1]) == ""
    assert s.push(euro[1:2]) == ""
    assert s.push(euro[2:] + b"5") == "€5"
    assert s.text == "price: €5"


def test_stop_string_ends_text_and_is_not_included():
    s = TextStream(stop=("END",))
    released, tail = _feed(s, [b"hello ", b"wor", b"ld E", b"ND and more"])
    assert "".join(released) + tail == "hello world "
    assert s.text == "hello world "
    assert s.stop_found == "END"


def test_possible_stop_prefix_is_held_back_until_decided():
    s = TextStream(stop=("\n\nUser:",))
    assert s.push(b"Answer.") == "Answer."
    assert s.push(b"\n") == ""  # could be the start of the stop string
    assert s.push(b"\nU") == ""
    assert s.push(b"sed to") == "\n\nUsed to"  # it was not: released together
    assert s.stop_found is None


def test_held_back_text_is_flushed_at_the_end():
    s = TextStream(stop=("###",))
    released, tail = _feed(s, [b"abc", b"#"])
    assert released == ["abc", ""]
    assert tail == "#"


def test_earliest_of_several_stop_strings_wins():
    s = TextStream(stop=("cat", "a c"))
    released, tail = _feed(s, [b"I have a cat"])
    assert "".join(released) + tail == "I have "
    assert s.stop_found == "a c"
