"""`harness generate` input: bad lines fail with file, line and field."""

import pytest

from harness.generate import load_requests
from harness.jsonl import InputError
from harness.types import Sampling


def write(tmp_path, *lines):
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_prompt_lines_become_chat_requests_with_role_sampling(tmp_path):
    path = write(
        tmp_path,
        '{"prompt": "hi"}',
        "",
        '{"id": "x", "messages": [{"role": "user", "content": "yo"}],'
        ' "sampling": {"max_tokens": 5}}',
    )
    requests = load_requests(path, Sampling(temperature=0.3), num_samples=2)
    assert [(r.id, r.sample_index) for r in requests] == [
        ("line1", 0),
        ("line1", 1),
        ("x", 0),
        ("x", 1),
    ]
    assert requests[0].messages[0].content == "hi"
    assert requests[2].sampling.max_tokens == 5 and requests[2].sampling.temperature == 0.3


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"prompt": "hi"', "requests.jsonl:2: not valid JSON"),
        ('["a"]', "requests.jsonl:2: expected a JSON object"),
        ('{"messages": [{"role": "robot", "content": "x"}]}', "requests.jsonl:2: messages.0.role"),
        (
            '{"messages": [{"role": "user"}]}',
            "requests.jsonl:2: messages.0.content: Field required",
        ),
        ('{"prompt": "x", "sampling": {"top_p": 0}}', "requests.jsonl:2: sampling.top_p"),
        ('{"prompt": "x", "colour": "red"}', "requests.jsonl:2: colour: Extra inputs"),
        ('{"prompt": "x", "messages": []}', "requests.jsonl:2: give either 'prompt' or 'messages'"),
    ],
)
def test_bad_lines_name_file_line_and_field(tmp_path, line, expected):
    path = write(tmp_path, '{"prompt": "fine"}', line)
    with pytest.raises(InputError) as error:
        load_requests(path, Sampling())
    assert expected in str(error.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match=r"nope\.jsonl: cannot read"):
        load_requests(tmp_path / "nope.jsonl", Sampling())
