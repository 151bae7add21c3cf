"""The Chinese README says what the English one says: the same sections, the same code.

Prose cannot be compared by a test, but its skeleton can: a section added to one README
and not the other, or a command or a code sample changed in one only, fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENGLISH = ROOT / "README.md"
CHINESE = ROOT / "README.zh-CN.md"

FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
HEADING = re.compile(r"^(#{2,3}) (.+)$", re.M)
LINK = re.compile(r"\]\(#([^)]+)\)")
CJK = re.compile(r"[\u3000-\u30ff\u3400-\u9fff\uff00-\uffef]")
# A shell line's comment: `# ` at the start of the line or after a blank (the commands
# shown have no such text inside their quotes).
SH_COMMENT = re.compile(r"^(.*?)((?:^|\s)# .*)?$")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _without_blocks(text: str) -> str:
    return FENCE.sub("", text)


def _blocks(text: str) -> list[tuple[str, str]]:
    return [(match.group(1), match.group(2)) for match in FENCE.finditer(text)]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _is_layout(code: str) -> bool:
    """The Development section's file layout, whose descriptions are translated."""
    return code.startswith("config.py ")


def test_the_same_sections_in_the_same_order() -> None:
    english = [level for level, _ in HEADING.findall(_without_blocks(_text(ENGLISH)))]
    chinese = [level for level, _ in HEADING.findall(_without_blocks(_text(CHINESE)))]
    assert len(english) > 10
    assert chinese == english


def test_the_same_code_blocks() -> None:
    english, chinese = _blocks(_text(ENGLISH)), _blocks(_text(CHINESE))
    assert [lang for lang, _ in chinese] == [lang for lang, _ in english]
    for (lang, ours), (_, theirs) in zip(english, chinese, strict=True):
        if _is_layout(ours):
            # The paths listed are the same; what each line says about them is translated.
            assert [line.split()[0] for line in theirs.splitlines()] == [
                line.split()[0] for line in ours.splitlines()
            ]
        elif lang == "sh":
            _same_shell(ours, theirs)
        else:
            assert theirs == ours, f"a {lang or 'plain'} block differs:\n{ours}"


def _same_shell(english: str, chinese: str) -> None:
    """The same commands line by line; a comment is the same, or translated."""
    english_lines, chinese_lines = english.splitlines(), chinese.splitlines()
    assert len(chinese_lines) == len(english_lines), english
    for ours, theirs in zip(english_lines, chinese_lines, strict=True):
        our_code, our_comment = SH_COMMENT.match(ours).groups()
        their_code, their_comment = SH_COMMENT.match(theirs).groups()
        assert their_code.rstrip() == our_code.rstrip(), ours
        assert bool(their_comment) == bool(our_comment), ours
        if their_comment and not CJK.search(their_comment):
            assert their_comment.strip() == our_comment.strip(), ours


@pytest.mark.parametrize("readme", [ENGLISH, CHINESE], ids=["en", "zh-CN"])
def test_every_link_within_the_readme_finds_its_section(readme: Path) -> None:
    text = _text(readme)
    anchors = {_slug(title) for _, title in HEADING.findall(_without_blocks(text))}
    links = LINK.findall(_without_blocks(text))
    assert links
    assert [link for link in links if link not in anchors] == []


def test_each_readme_links_to_the_other() -> None:
    assert "(README.zh-CN.md)" in _text(ENGLISH)
    assert "(README.md)" in _text(CHINESE)


def test_a_translated_comment_still_needs_its_command() -> None:
    """The comparison itself: a changed command fails even beside a translated comment."""
    _same_shell("make run    # serves", "make run    # 提供服务")
    with pytest.raises(AssertionError):
        _same_shell("make run    # serves", "make serve  # 提供服务")
    with pytest.raises(AssertionError):
        _same_shell("make run    # serves", "make run    # serve")


def test_the_writing_jobs_example_is_the_repositorys_own_job() -> None:
    """ "Writing jobs" quotes jobs/reports.py (its lines, in order, `...` for the rest), whose
    function is run by tests/test_observability.py: the example is code that runs."""
    [example] = [
        code
        for lang, code in _blocks(_text(ENGLISH))
        if code.startswith("# jobs/reports.py (in this repository)")
    ]
    source = (ROOT / "jobs" / "reports.py").read_text().splitlines()
    position = 0
    for line in example.splitlines()[1:]:
        if line.strip() in ("", "..."):
            continue
        assert line in source[position:], f"not in jobs/reports.py (in this order): {line!r}"
        position = source.index(line, position) + 1
