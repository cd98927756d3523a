"""Mount option words: flags, data, and no way to smuggle anything through."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from elastivol.errors import InvalidArgument
from elastivol.node import mount
from elastivol.node.mount import (
    MS_NOATIME,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_RELATIME,
    MS_REMOUNT,
    MS_STRICTATIME,
    parse_options,
)

FLAG_WORDS = sorted(mount._FLAG_WORDS)
SAFE = st.text(alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789=_-.:/@+"), min_size=1, max_size=12)
WORD = st.one_of(st.sampled_from(FLAG_WORDS), SAFE)


def test_flags_and_data() -> None:
    assert parse_options([]) == (0, "")
    assert parse_options(["ro", "nosuid", "nodev", "noexec", "noatime"]) == (
        MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME,
        "",
    )
    assert parse_options(["ro", "rw"]) == (0, "")
    assert parse_options(["relatime", "strictatime"]) == (MS_STRICTATIME, "")
    assert parse_options(["strictatime", "relatime"]) == (MS_RELATIME, "")
    assert parse_options(["remount", "ro"]) == (MS_REMOUNT | MS_RDONLY, "")
    assert parse_options(["discard", "ro", "commit=30", "data=ordered"]) == (MS_RDONLY, "discard,commit=30,data=ordered")


@pytest.mark.parametrize("word", ["suid", "dev", "exec", "SUID", "Dev"])
def test_privileged_words_need_permission(word: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_options(["nosuid", word])
    assert repr(word) in info.value.message and "--allow-privileged-mount-options" in info.value.message
    flags, _ = parse_options([word], allow_privileged=True)
    assert flags & (MS_NOSUID | MS_NODEV | MS_NOEXEC) == 0


@pytest.mark.parametrize("word", ["", "ro,suid", "a b", "x\0y", "tab\there", "new\nline", "uid=0\r", "a\x7fb"])
def test_malformed_words(word: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_options(["noatime", word], allow_privileged=True)
    if word:
        assert repr(word) in info.value.message


def test_one_string_is_not_a_list() -> None:
    with pytest.raises(InvalidArgument):
        parse_options("ro,suid")


@given(st.lists(WORD, max_size=12))
def test_data_is_exactly_the_unknown_words(words: list[str]) -> None:
    flags, data = parse_options(words, allow_privileged=True)
    rest = [w for w in words if w not in mount._FLAG_WORDS]
    assert data == ",".join(rest)
    # Splitting the data string gives the words back: nothing merged, nothing injected.
    assert (data.split(",") if data else []) == rest
    # The last word about a flag decides it.
    for bit, on, off in [(MS_RDONLY, "ro", "rw"), (MS_NOSUID, "nosuid", "suid"), (MS_NODEV, "nodev", "dev")]:
        last = next((w for w in reversed(words) if w in (on, off)), None)
        assert bool(flags & bit) == (last == on)


@given(st.lists(WORD, max_size=6), st.text(min_size=1, max_size=8), st.sampled_from([",", "\0", " ", "\t", "\n"]),
       st.integers(min_value=0, max_value=6))
def test_smuggling_is_always_refused(words: list[str], text: str, bad: str, at: int) -> None:
    smuggled = text[: len(text) // 2] + bad + text[len(text) // 2 :]
    words.insert(min(at, len(words)), smuggled)
    with pytest.raises(InvalidArgument):
        parse_options(words, allow_privileged=True)


@given(st.lists(WORD, max_size=8))
def test_privileged_policy(words: list[str]) -> None:
    privileged = any(w.lower() in {"suid", "dev", "exec"} for w in words)
    if privileged:
        with pytest.raises(InvalidArgument):
            parse_options(words)
    else:
        assert parse_options(words) == parse_options(words, allow_privileged=True)


def test_mountinfo_parsing() -> None:
    data = (
        b"22 27 0:21 / /proc rw,relatime - proc proc rw\n"
        b"36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue\n"
        b"40 36 7:3 / /mnt/with\\040space ro,nosuid - ext4 /dev/loop3 ro\n"
        b"41 27 0:44 / /tab\\011and\\134back\\012nl rw - tmpfs my\\040tmpfs rw,size=4k\n"
        b"42 27 0:45 / /no-super-options rw - weird none\n"
        b"43 27 0:46 / /caf\xc3\xa9 rw - tmpfs tmpfs rw\n"
    )
    table = mount.parse_mountinfo(data)
    assert [m.mount_id for m in table] == [22, 36, 40, 41, 42, 43]
    second = table[1]
    assert (second.parent_id, second.major_minor, second.root, second.target) == (35, "98:0", "/mnt1", "/mnt/with space")
    assert second.optional == ("master:1", "shared:7") and second.fstype == "ext3" and second.source == "/dev/root"
    assert second.super_options == "rw,errors=continue" and not second.read_only
    top = mount.find_by_target("/mnt/with space", table)
    assert top is not None and top.mount_id == 40 and top.read_only
    assert table[3].target == "/tab\tand\\back\nnl" and table[3].source == "my tmpfs"
    assert table[4].super_options == ""
    assert table[5].target == "/café"
    assert mount.find_by_target("/nowhere", table) is None


def test_mountinfo_with_control_characters_in_a_path() -> None:
    # The kernel escapes only space, tab, newline and backslash: a carriage return, vertical tab or
    # form feed reaches the table raw, and must not be taken for the end of a line.
    data = (
        b"48 47 7:1 / /k/a\rb rw,relatime - ext4 /dev/loop1 rw\n"
        b"55 47 7:1 / /k/\x0b\x0c\x1c\x1d\x1e\x85 rw,relatime - ext4 /dev/loop1 rw\n"
        b"56 47 0:46 / /after rw - tmpfs tmpfs rw\n"
    )
    table = mount.parse_mountinfo(data)
    assert [m.target for m in table] == ["/k/a\rb", "/k/\x0b\x0c\x1c\x1d\x1e" + b"\x85".decode(errors="surrogateescape"),
                                         "/after"]


def test_mountinfo_with_a_carriage_return_in_a_path() -> None:
    """The kernel escapes newline but not "\r", "\v" or "\f": such a target is still one line."""
    data = b"50 27 0:47 / /k/a\rb\x0bc\x0cd rw - tmpfs none rw\n51 27 0:48 / /k/e rw - tmpfs none rw\n"
    table = mount.parse_mountinfo(data)
    assert [(m.mount_id, m.target) for m in table] == [(50, "/k/a\rb\x0bc\x0cd"), (51, "/k/e")]
