"""agent.topics: name validation, topic building and command-topic parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.topics import Topics, prefix_problem, validate_name, validate_prefix, validate_sub_topic

# -- validate_name -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gas", "gas_meter-2", "Gaszähler", "a b", "x" * 200, "é"])
def test_valid_names_are_returned(name: str) -> None:
    assert validate_name(name) == name
    assert validate_sub_topic(name) == name


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("a+b", r"wildcard '\+'"),
        ("+", r"wildcard '\+'"),
        ("a#", "wildcard '#'"),
        ("a/b", "a '/'"),
        ("/", "a '/'"),
        ("a\0b", "NUL"),
        ("a\nb", "control character U\\+000A"),
        ("a\tb", "control character U\\+0009"),  # inner tab: no strip problem, but Cc
        ("a\x7fb", "control character U\\+007F"),
        ("a\x85b", "control character U\\+0085"),  # C1 control
        (" gas", "leading or trailing whitespace"),
        ("gas ", "leading or trailing whitespace"),
        ("gas\u00a0", "leading or trailing whitespace"),  # no-break space
        ("\tgas", "leading or trailing whitespace"),
    ],
)
def test_invalid_names_are_refused_with_reason(name: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as info:
        validate_name(name, "device")
    assert repr(name) in str(info.value)
    assert "device" in str(info.value)


def test_validate_name_names_what_it_checks() -> None:
    with pytest.raises(ValueError, match=r"invalid channel name 'a/b'"):
        validate_name("a/b", "channel")
    with pytest.raises(ValueError, match=r"invalid command sub-topic name 'a#'"):
        validate_sub_topic("a#")


def test_validate_name_refuses_non_strings() -> None:
    with pytest.raises(TypeError, match="device name must be a str"):
        validate_name(None)  # type: ignore[arg-type]


@given(st.text(min_size=1))
def test_validate_name_accepts_exactly_the_safe_names(name: str) -> None:
    unsafe = (
        any(c in "+#/" or c == "\0" or (ord(c) < 32 or 0x7F <= ord(c) <= 0x9F) for c in name)
        or name != name.strip()
    )
    if unsafe:
        with pytest.raises(ValueError):
            validate_name(name)
    else:
        assert validate_name(name) == name


# -- prefixes ------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["gas2mqtt", "home/gas", "a/b/c", "a/$b", "x$", "a b/c"])
def test_valid_prefixes(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix
    assert Topics(prefix).prefix == prefix


@pytest.mark.parametrize(
    "prefix",
    ["", "/home", "home/", "a//b", "home/+", "ho#me", "a\nb", "a/ b", " a", "a ", "$SYS", "$x/y"],
)
def test_invalid_prefixes(prefix: str) -> None:
    with pytest.raises(ValueError, match="invalid topic prefix"):
        Topics(prefix)


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [
        ("a//b", "level 2 '' is empty"),
        ("home/ gas", "level 2 ' gas' has leading or trailing whitespace"),
        ("a\x01", "level 1 'a\\x01' contains the control character U+0001"),
        ("$SYS/gas", "level 1 '$SYS' starts with '$', which is reserved for broker topics"),
    ],
)
def test_invalid_prefix_message_names_the_level_and_why(prefix: str, reason: str) -> None:
    assert prefix_problem(prefix) is not None
    assert prefix_problem(prefix).startswith(reason)  # type: ignore[union-attr]
    with pytest.raises(ValueError) as info:
        validate_prefix(prefix)
    assert str(info.value) == f"invalid topic prefix {prefix!r}: {prefix_problem(prefix)}"


def test_topics_is_frozen() -> None:
    topics = Topics("p")
    with pytest.raises(AttributeError):
        topics.prefix = "q"  # type: ignore[misc]


# -- building ------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["p", "home/gas"])
def test_topic_builders(prefix: str) -> None:
    t = Topics(prefix)
    assert t.state("dev") == f"{prefix}/dev/state"
    assert t.state("dev", is_root=True) == f"{prefix}/state"
    assert t.state(None, is_root=True) == f"{prefix}/state"
    assert t.set("dev") == f"{prefix}/dev/set"
    assert t.set("dev", True) == f"{prefix}/set"
    assert t.command("dev", "mode") == f"{prefix}/dev/mode/set"
    assert t.command("dev", "mode", is_root=True) == f"{prefix}/mode/set"
    assert t.availability("dev") == f"{prefix}/dev/availability"
    assert t.availability("dev", is_root=True) == f"{prefix}/availability"
    assert t.error() == f"{prefix}/error"
    assert t.error("dev") == f"{prefix}/dev/error"
    assert t.error("dev", is_root=True) == f"{prefix}/error"
    assert t.status == f"{prefix}/status"
    assert t.channel("dev", "raw") == f"{prefix}/dev/raw"
    assert t.channel("dev", "raw", is_root=True) == f"{prefix}/raw"


def test_builders_need_a_device_unless_root() -> None:
    with pytest.raises(ValueError, match="device name is needed"):
        Topics("p").state(None)


# -- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["p", "home/gas", "a/b/c"])
@pytest.mark.parametrize(
    ("suffix", "expected"),
    [
        ("set", (None, None)),
        ("valve/set", ("valve", None)),  # device valve, or the root's sub-topic valve
        ("valve/mode/set", ("valve", "mode")),
    ],
)
def test_parse_command(prefix: str, suffix: str, expected: tuple[str | None, str | None]) -> None:
    assert Topics(prefix).parse_command(f"{prefix}/{suffix}") == expected


@pytest.mark.parametrize(
    "topic",
    [
        "home/gas",  # the prefix itself
        "home/gas/",  # empty level
        "home/gas/valve/state",  # not a command
        "home/gas/valve/set/x",
        "home/gas/a/b/c/set",  # too deep
        "home/gas//set",
        "home/gas/valve//set",
        "home/gasx/set",  # a longer prefix, not ours
        "home/set",  # a shorter one
        "other/gas/valve/set",
        "home/gas/ valve/set",  # a name validate_name refuses
        "home/gas/va\x01lve/set",
        "",
        "set",
    ],
)
def test_parse_command_refuses_non_commands(topic: str) -> None:
    assert Topics("home/gas").parse_command(topic) is None


@given(
    device=st.text(alphabet="abcXYZ09_-é", min_size=1, max_size=8),
    sub=st.text(alphabet="abcXYZ09_-é", min_size=1, max_size=8),
    prefix=st.sampled_from(["p", "home/gas", "x/y/z"]),
)
def test_parse_inverts_build(device: str, sub: str, prefix: str) -> None:
    t = Topics(prefix)
    assert t.parse_command(t.set(device)) == (device, None)
    assert t.parse_command(t.command(device, sub)) == (device, sub)
    assert t.parse_command(t.set(None, is_root=True)) == (None, None)
    assert t.parse_command(t.command(None, sub, is_root=True)) == (sub, None)
    assert t.parse_command(t.state(device)) is None
