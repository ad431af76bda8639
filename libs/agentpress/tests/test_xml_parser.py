"""XML tool-call parsing: unit cases and split-invariance / garbage property tests."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agentpress.xml_parser import XmlCall, XmlCallParser, XmlError, XmlText


def parse(chunks: list[str]) -> tuple[str, list]:
    parser = XmlCallParser()
    items = [i for c in chunks for i in parser.feed(c)] + parser.finish()
    text = "".join(i.text for i in items if isinstance(i, XmlText))
    return text, [i for i in items if not isinstance(i, XmlText)]


def invoke(name: str, **params: str) -> str:
    body = "".join(f'<parameter name="{k}">{v}</parameter>\n' for k, v in params.items())
    return f'<invoke name="{name}">\n{body}</invoke>\n'


def test_text_around_and_between_blocks():
    stream = (
        f"Before <function_calls>\n{invoke('a', x='1')}{invoke('b', y='two words')}</function_calls>"
        f" between <function_calls>{invoke('c')}</function_calls> after"
    )
    text, calls = parse([stream])
    assert text == "Before  between  after"
    assert calls == [XmlCall("a", {"x": "1"}), XmlCall("b", {"y": "two words"}), XmlCall("c", {})]


def test_multiline_parameter_values_are_kept_verbatim():
    content = "def f():\n    return '<b>'\n"
    _, calls = parse([f"<function_calls>{invoke('create_file', path='f.py', content=content)}</function_calls>"])
    assert calls == [XmlCall("create_file", {"path": "f.py", "content": content})]


def test_calls_are_released_at_their_closing_tag():
    parser = XmlCallParser()
    assert parser.feed(f"<function_calls>{invoke('a')}") == [XmlCall("a", {})]
    assert parser.feed("<invoke name=") == []


def test_lookalike_text_is_not_swallowed():
    text, calls = parse(["a < b and <function_call> and <function_calls", "x> end"])
    assert text == "a < b and <function_call> and <function_callsx> end" and calls == []


def test_malformed_and_unterminated_are_reported():
    _, calls = parse(
        [
            '<function_calls><invoke name="">x</invoke><invoke name="a"><oops/></invoke>'
            '<invoke name="b"></function_calls><function_calls><invoke name="c">'
        ]
    )
    assert [type(c) for c in calls] == [XmlError, XmlError, XmlError, XmlError]
    assert "without a tool name" in calls[0].message
    assert calls[1].name == "a" and "unexpected content" in calls[1].message
    assert "unterminated <invoke>" in calls[2].message
    assert "unterminated <function_calls>" in calls[3].message


def test_stray_text_inside_a_block_is_reported():
    _, calls = parse(['<function_calls>hello <invoke name="a"></invoke></function_calls>'])
    assert isinstance(calls[0], XmlError) and calls[1] == XmlCall("a", {})


_names = st.sampled_from(["run_command", "create_file", "x"])
_values = st.text(alphabet=st.characters(blacklist_characters="<"), max_size=30)
_prose = st.text(alphabet=st.characters(blacklist_characters="<"), max_size=30)


@st.composite
def valid_streams(draw):
    parts, expected_text, expected_calls = [], [], []
    for _ in range(draw(st.integers(0, 3))):
        prose = draw(_prose)
        parts.append(prose)
        expected_text.append(prose)
        invokes = draw(
            st.lists(
                st.tuples(_names, st.dictionaries(st.sampled_from(["a", "b", "path"]), _values, max_size=3)),
                min_size=1,
                max_size=3,
            )
        )
        parts.append("<function_calls>\n" + "".join(invoke(n, **p) for n, p in invokes) + "</function_calls>")
        expected_calls += [XmlCall(n, p) for n, p in invokes]
    tail = draw(_prose)
    parts.append(tail)
    expected_text.append(tail)
    return "".join(parts), "".join(expected_text), expected_calls


def _split(stream: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    bounds = [0, *points, len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:])]


@settings(max_examples=300, deadline=None)
@given(valid_streams(), st.lists(st.integers(0, 10_000), max_size=40))
def test_any_split_gives_the_same_calls_and_text(case, cuts):
    stream, text, calls = case
    assert parse([stream]) == (text, calls)
    assert parse(_split(stream, cuts)) == (text, calls)


@settings(max_examples=300, deadline=None)
@given(valid_streams(), st.data())
def test_one_char_chunks(case, data):
    stream, text, calls = case
    assert parse(list(stream)) == (text, calls)


_xmlish = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "<function_calls>",
                "</function_calls>",
                '<invoke name="a">',
                "</invoke>",
                '<parameter name="p">',
                "</parameter>",
                "<",
                ">",
                '"',
                "<invoke",
                "</",
                "\n",
            ]
        ),
        st.text(max_size=8),
    ),
    max_size=30,
)


@settings(max_examples=500, deadline=None)
@given(_xmlish, st.lists(st.integers(0, 10_000), max_size=20))
def test_garbage_never_raises_and_split_does_not_matter(pieces, cuts):
    stream = "".join(pieces)
    whole = parse([stream])
    assert parse(_split(stream, cuts)) == whole
