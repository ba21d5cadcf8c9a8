"""Hostile inbound messages (issue 14), fuzzed with hypothesis through the real routing.

Every message goes the way a broker's would: ``MockMqttClient.deliver`` calls the runtime's
message callback — the real :class:`~agent.runtime.routing.Router`, the real inboxes, device
threads, ``DeviceContext.dispatch`` and :class:`~agent.runtime.reporting.Reporter` — under
the testing kit's :class:`~agent.testing.AppHarness` and its fake clock. Generated:

* topics under the prefix: a known device + ``set``, a known device + sub-topic, unknown
  devices, extra and missing levels, empty levels, NUL and other control characters,
  whitespace, ``+`` and ``#`` in levels, and topics that are no command at all;
* payloads: random bytes (invalid UTF-8, NUL), text, JSON of every type, near-valid
  commands, deeply nested JSON (up to ~240 KB) and payloads at, over and far over the
  256 KiB limit (1 MiB);

sent to (a) an App with a command handler taking ``str``, a device whose handler parses a
JSON object, and a sub-topic handler, and (b) the daemon's built-ins that take commands
(``gpio_output`` plain and restored, ``gpio_input``, ``exec_command``) next to a telemetry
built-in, built from a daemon config file as ``agent`` does.

For each message an independent model says what must happen: handled (its state
published), ignored (retained, empty), or rejected — exactly one error payload on
``{prefix}/error`` (and one on ``{prefix}/{device}/error`` for a known device) with the
right ``error_type``. Under a burst the reporter aggregates: one payload per (device,
error_type) at once and one more, with ``details.occurrences``, a second later — the counts
adding up to what was sent. No exception escapes ``deliver``, every device thread stays
alive and ``online``, a valid command afterwards is handled, and memory stays bounded
across a batch of 1 MiB payloads (tracemalloc).

Two findings are kept as regression tests at the end: malformed command topics a broker
*does* deliver (an empty level matches ``+``) were dropped without a word, and an
``@app.command`` handler refusing payloads with InvalidPayload was restarted and at last
given up, as if the device were failing.
"""

from __future__ import annotations

import json
import math
import textwrap
import threading
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import App, Command, DeviceContext, InvalidPayload
from agent.daemon.app import build_app
from agent.daemon.builtins.gpio import parse_command
from agent.daemon.config import check_config
from agent.testing import AppHarness

# Reproducible in CI: the same examples on every run; no deadline (a loaded machine is slow,
# not wrong); the harness lives across the examples of a test, hence the fixture check off.
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    report_multiple_bugs=False,  # one harness serves all examples: one failure is enough
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

LIMIT = 256 * 1024  # mqtt.max_payload_bytes, the default
MiB = 1024 * 1024
MAX_REPORT = 2048  # bytes: an error payload never echoes a big payload back


# -- the wire model: which topic is a command, and for whom ------------------------------------


def _level_ok(level: str) -> bool:
    """One name level of a command topic, as the wire contract allows it."""
    return (
        level != ""
        and level == level.strip()
        and not any(
            c in "+#/" or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F  # Cc: C0, DEL, C1
            for c in level
        )
    )


def command_target(prefix: str, topic: str) -> tuple[str | None, str | None] | None:
    """``(first, second)`` name levels of a command topic under ``prefix``; None if it is
    none (written from the wire contract, not from ``Topics.parse_command``)."""
    if not topic.startswith(prefix + "/"):
        return None
    levels = topic[len(prefix) + 1 :].split("/")
    if levels[-1] != "set" or len(levels) > 3:
        return None
    names = levels[:-1]
    if not all(_level_ok(n) for n in names):
        return None
    return (names[0] if names else None, names[1] if len(names) > 1 else None)


def command_shaped(prefix: str, topic: str) -> bool:
    """``{prefix}/set``, ``{prefix}/x/set`` or ``{prefix}/x/y/set`` whatever x and y are."""
    levels = topic[len(prefix) + 1 :].split("/")
    return topic.startswith(prefix + "/") and levels[-1] == "set" and len(levels) <= 3


def subscribed(prefix: str, topic: str) -> bool:
    """The runtime's subscriptions (``{p}/set``, ``{p}/+/set``, ``{p}/+/+/set``) match
    ``topic``: a broker would deliver it (an empty level matches ``+``)."""
    if not topic.startswith(prefix + "/"):
        return False
    levels = topic[len(prefix) + 1 :].split("/")
    return levels[-1] == "set" and len(levels) <= 3 and not any(c in topic for c in "+#\0")


@dataclass(frozen=True)
class Outcome:
    """What one inbound message must lead to."""

    error_type: str | None = None  # None: no error payload
    device: str | None = None  # the device the report names (None: app-wide)
    handled: Any = None  # for accepted commands: what the handler did (model's own value)


DROPPED = Outcome()


def route(
    prefix: str,
    devices: Callable[[str, str | None, str], Outcome] | None,
    names: set[str],
    topic: str,
    payload: bytes,
    retained: bool,
) -> Outcome:
    """The router's side of the model; ``devices(device, sub, text)`` the handler's."""
    target = command_target(prefix, topic)
    if target is None:
        # Shaped like a command topic but a level is no name: reported, app-wide.
        return Outcome("error", None) if command_shaped(prefix, topic) else DROPPED
    if retained or not payload:
        return DROPPED  # retained (a warning) or empty (DEBUG)
    first, second = target
    if first not in names:  # no root device in these apps
        return Outcome("error", None)  # LookupError: no device accepts commands on ...
    if len(payload) > LIMIT:
        return Outcome("payload_too_large", first)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return Outcome("invalid_payload", first)
    assert devices is not None
    return devices(first, second, text)


# -- strategies ---------------------------------------------------------------------------------

WEIRD = "ab/+# \t\0\x01\x1f\x7f\x85\u2003\u00e9\ufffd"


def levels(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from([*known, "set", "state", "error", "nosuch", ""]),
        st.text(alphabet=st.sampled_from(list(WEIRD)), max_size=6),
        st.text(max_size=6),  # any Unicode but surrogates, as paho decodes topics
    )


def topics(prefix: str, known: list[str], plain: list[str]) -> st.SearchStrategy[str]:
    """Half the topics a known device's (so that payloads get tested), the rest command-
    shaped with generated levels, and some that are no command at all."""
    names = levels(known)
    plain_topics = st.sampled_from(plain)
    generated = st.one_of(
        st.lists(names, max_size=4).map(lambda ls: "/".join([prefix, *ls, "set"])),
        st.lists(names, min_size=1, max_size=3).map(lambda ls: "/".join([prefix, *ls])),
        st.text(max_size=12),
    )
    return weighted((1, plain_topics), (1, generated))


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities too: json.dumps writes them, json.loads reads them
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)


def _nested(depth: int, kind: str) -> bytes:
    """JSON nested ``depth`` deep: arrays, objects, unterminated, or inside a command's key."""
    if kind == "[]":
        return b"[" * depth + b"]" * depth
    if kind == "{}":
        return b'{"a":' * depth + b"1" + b"}" * depth
    if kind == "[":
        return b"[" * depth
    return b'{"%s":' % kind.encode() + b"[" * depth + b"]" * depth + b"}"


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of ``choices``, each drawn ``weight`` times in ``sum(weights)`` (one_of weighs its
    branches alike, and flattens a nested one_of into itself)."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(table) - 1).flatmap(table.__getitem__)


def payloads(valid: list[str], keys: list[str]) -> st.SearchStrategy[bytes]:
    """Valid commands (a third), and hostile payloads: near-valid, random bytes and text,
    JSON of every type, JSON nested past the recursion limit, 256 KiB and 1 MiB."""
    near = st.tuples(
        st.sampled_from(valid),
        st.sampled_from(["", " ", "\n", "\0", "\x01", "\u00e9", "{", "}", '"']),
        st.booleans(),
    ).map(lambda t: ((t[1] + t[0]) if t[2] else (t[0] + t[1])).encode())
    hostile = weighted(
        (2, near),
        (2, st.binary(max_size=200)),  # invalid UTF-8, NUL, anything
        (1, st.text(max_size=60).map(str.encode)),
        (1, JSON_VALUES.map(lambda v: json.dumps(v).encode())),
        (
            2,
            st.dictionaries(st.sampled_from([*keys, "x"]), JSON_VALUES, max_size=2).map(
                lambda d: json.dumps(d).encode()
            ),
        ),
        (
            3,
            st.builds(  # past the recursion limit (1,000) too, whatever the sizes drawn
                _nested,
                st.sampled_from([2, 999, 1000, 1001, 5000, 40_000]) | st.integers(2, 40_000),
                st.sampled_from(["[]", "{}", "[", *keys]),
            ),
        ),
        (
            1,
            st.builds(  # the limit, one over it, and a megabyte
                lambda size, fill: fill * size,
                st.sampled_from([LIMIT, LIMIT + 1, MiB]),
                st.sampled_from([b"a", b"\xff", b"\0", b"["]),
            ),
        ),
    )
    return weighted((1, st.sampled_from(valid).map(str.encode)), (2, hostile))


# -- driving a harness --------------------------------------------------------------------------


class Wire:
    """One running harness, seen from the broker's side."""

    def __init__(self, h: AppHarness, devices: list[str]) -> None:
        self.h = h
        self.prefix = h.topics.prefix
        self.devices = devices

    def deliver(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """As the broker would: returns once the device threads handled it."""
        self.h.mqtt.deliver(topic, payload, retain=retained)  # an exception would escape here
        self.h.clock.settle_now()
        self.h.wait_until_idle()

    def errors(self) -> list[dict[str, Any]]:
        return [m.json() for m in self.h.messages_for(f"{self.prefix}/error")]

    def device_errors(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            (m.topic.split("/")[-2], m.json())
            for m in self.h.messages_for(f"{self.prefix}/+/error")
        ]

    def reopen(self) -> None:
        """Let the reporter's gates open again: the flush of anything held back (after one
        second), then one more second for the gate that flush closed."""
        self.h.advance(1.0)
        self.h.advance(1.0)

    def assert_alive(self) -> None:
        alive = {t.name for t in threading.enumerate() if t.is_alive()}
        dead = [d for d in self.devices if f"device:{d}" not in alive]
        assert not dead, f"device threads gone: {dead}"
        for device in self.devices:
            availability = self.h.messages_for(f"{self.prefix}/{device}/availability")
            assert availability and availability[-1].payload == "online", (device, availability)

    def assert_one_message(
        self, topic: str, payload: bytes, retained: bool, outcome: Outcome
    ) -> None:
        """Deliver one message and check its error reports against ``outcome``."""
        before, before_dev = len(self.errors()), len(self.device_errors())
        published = len(self.h.published)
        self.deliver(topic, payload, retained)
        for message in self.h.published[published:]:
            if message.topic.endswith("/error"):
                assert len(message.payload.encode()) < MAX_REPORT, message.payload[:300]
        new = self.errors()[before:]
        new_dev = self.device_errors()[before_dev:]
        if outcome.error_type is None:
            assert new == [] and new_dev == [], (topic, payload[:80], new, new_dev)
        else:
            assert [(e["error_type"], e["device"]) for e in new] == [
                (outcome.error_type, outcome.device)
            ], (topic, payload[:80], new)
            assert "occurrences" not in new[0]["details"]
            assert new[0]["details"]["topic"] == topic
            wanted_dev = [] if outcome.device is None else [(outcome.device, new[0])]
            assert new_dev == wanted_dev, (topic, payload[:80], new_dev)


# -- (a) an App: a str handler, a JSON handler, a sub-topic handler ----------------------------

P = "fz"
APP_DEVICES = ["text", "json"]
APP_VALID = [
    "open",
    '{"level": 0}',
    '{"level": 100}',
    ' {"level":42} ',
    "1.5",
    "-3",
    "1e1",
    "nan",
    "inf",
    "",
]


def parse_level(payload: str) -> int:
    """The JSON handler's parsing: ``{"level": 0..100}``, else InvalidPayload."""
    try:
        data = json.loads(payload)
    except RecursionError:
        raise InvalidPayload("JSON nested too deeply") from None
    except ValueError as exc:
        raise InvalidPayload(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or set(data) != {"level"}:
        raise InvalidPayload('expected {"level": 0..100}')
    level = data["level"]
    if type(level) is not int or not 0 <= level <= 100:
        raise InvalidPayload('expected {"level": 0..100}')
    return level


def parse_offset(payload: str) -> float:
    """The sub-topic handler's parsing: a finite number within ±50, else InvalidPayload."""
    try:
        offset = float(payload)
    except ValueError:
        raise InvalidPayload("expected a number") from None
    if not (math.isfinite(offset) and -50 <= offset <= 50):
        raise InvalidPayload("expected a number from -50 to 50")
    return offset


def make_app(seen: list[tuple[str, int]]) -> App:
    app = App(P, heartbeat_interval=None)

    @app.command("text")
    def text(topic: str, payload: str) -> dict[str, Any]:
        seen.append((topic, len(payload)))  # not the payload: memory is measured too
        return {"length": len(payload)}

    @app.device("json")
    def json_device(ctx: DeviceContext) -> None:
        @ctx.on_command
        def set_level(command: Command) -> None:
            ctx.publish_state({"level": parse_level(command.payload)})

        @ctx.on_command("calibrate")
        def calibrate(sub_topic: str | None, payload: str) -> None:
            ctx.publish_state({"offset": parse_offset(payload)})

        while not ctx.shutdown_requested:
            ctx.sleep(3600)  # commands are handled while it sleeps

    return app


def app_model(device: str, sub: str | None, text: str) -> Outcome:
    if device == "text":
        return Outcome(handled=("text", len(text)))  # every sub-topic, every text
    try:
        if sub is None:
            return Outcome(handled={"level": parse_level(text)})
        if sub == "calibrate":
            return Outcome(handled={"offset": parse_offset(text)})
    except InvalidPayload:
        return Outcome("invalid_payload", device)
    return Outcome("error", device)  # LookupError: no handler for that sub-topic


def app_outcome(topic: str, payload: bytes, retained: bool = False) -> Outcome:
    return route(P, app_model, set(APP_DEVICES), topic, payload, retained)


@pytest.fixture
def app_wire() -> Iterator[tuple[Wire, list[tuple[str, int]]]]:
    seen: list[tuple[str, int]] = []
    with AppHarness(make_app(seen), raise_errors=False) as h:
        yield Wire(h, APP_DEVICES), seen


APP_TOPICS = topics(
    P,
    APP_DEVICES,
    [f"{P}/text/set", f"{P}/json/set", f"{P}/json/calibrate/set", f"{P}/text/calibrate/set"],
)


def check_app_message(
    wire: Wire, seen: list[tuple[str, int]], topic: str, payload: bytes, retained: bool
) -> None:
    outcome = app_outcome(topic, payload, retained)
    handled_before, states_before = len(seen), len(wire.h.messages_for(f"{P}/json/state"))
    wire.assert_one_message(topic, payload, retained, outcome)
    handled = outcome.handled
    if isinstance(handled, tuple):
        assert seen[handled_before:] == [(topic, handled[1])]
    else:
        assert len(seen) == handled_before
    json_states = wire.h.messages_for(f"{P}/json/state")[states_before:]
    if isinstance(handled, dict):
        assert [m.json() for m in json_states] == [handled]
    else:
        assert json_states == []


def probe_app(wire: Wire, seen: list[tuple[str, int]]) -> None:
    """Every device still serves: a valid command to each is handled."""
    wire.assert_alive()
    count = len(seen)
    wire.deliver(f"{P}/text/set", b"probe")
    assert seen[count:] == [(f"{P}/text/set", 5)]
    wire.deliver(f"{P}/json/set", b'{"level": 7}')
    wire.h.assert_state("json", {"level": 7})
    wire.deliver(f"{P}/json/calibrate/set", b"-1.25")
    wire.h.assert_state("json", {"offset": -1.25})


def test_every_inbound_message_is_handled_ignored_or_reported_once(
    app_wire: tuple[Wire, list[tuple[str, int]]],
) -> None:
    wire, seen = app_wire
    kinds: Counter[str | None] = Counter()

    @FUZZ
    @given(
        topic=APP_TOPICS,
        payload=payloads(APP_VALID, ["level"]),
        retained=st.sampled_from([False] * 9 + [True]),
    )
    def one(topic: str, payload: bytes, retained: bool) -> None:
        wire.reopen()  # first: whatever the example before did, even failing half-way
        kinds[app_outcome(topic, payload, retained).error_type] += 1
        check_app_message(wire, seen, topic, payload, retained)
        wire.assert_alive()

    one()
    probe_app(wire, seen)
    # The examples reached every branch of the model (else the strategies need a look).
    assert {None, "error", "invalid_payload", "payload_too_large"} <= set(kinds), kinds


def test_known_hostile_messages_one_by_one(
    app_wire: tuple[Wire, list[tuple[str, int]]],
) -> None:
    """The cases the issue names, whatever hypothesis happens to draw."""
    wire, seen = app_wire
    cases: list[tuple[str, bytes]] = [
        (f"{P}/json/set", b'{"level":' + b"[" * 20000 + b"]" * 20000 + b"}"),
        (f"{P}/json/set", b"[" * 100_000),  # unterminated, 100 KB
        (f"{P}/json/set", b'{"level": 5, "level": 500}'),  # the last duplicate wins
        (f"{P}/json/set", b'{"level": true}'),
        (f"{P}/json/set", b'{"level": 5.0}'),
        (f"{P}/json/set", b'{"level": NaN}'),
        (f"{P}/json/set", b'{"level": 1}\0'),
        (f"{P}/json/set", '{"level": "\u00e9"}'.encode()),
        (f"{P}/json/set", b'"\\ud800"'),  # a lone surrogate, escaped
        (f"{P}/json/set", b"\xed\xa0\x80"),  # a surrogate, UTF-8 encoded: invalid
        (f"{P}/json/set", b"\xff" * MiB),
        (f"{P}/json/set", b"1" * LIMIT),  # at the limit: decoded, parsed, refused
        (f"{P}/json/calibrate/set", b"1e999"),
        (f"{P}/json/calibrate/set", b"\0"),
        (f"{P}/json/nosuch/set", b"1"),
        (f"{P}/text/set", b"\0\x01 \xc3\xa9"),
        (f"{P}/text/set", b"x" * LIMIT),
        (f"{P}/text/set", b"x" * (LIMIT + 1)),
        (f"{P}/text/set", b"\xc3"),  # truncated UTF-8
        (f"{P}/nosuch/set", b"x" * MiB),
        (f"{P}/set", b"open"),  # no root device
        (f"{P}/text/a/b/set", b"open"),  # extra level: not subscribed, not a command
        (f"{P}/+/set", b"open"),  # wildcards: a broker refuses such a publish
        (f"{P}/#", b"open"),
        (f"{P}/text/set\0", b"open"),
        (f"{P}/text/state", b"open"),  # our own topic, not a command
        (f"{P}/text/set", b""),  # clearing a retained command
    ]
    for topic, payload in cases:
        for retained in (False, True):
            check_app_message(wire, seen, topic, payload, retained)
            wire.reopen()
    probe_app(wire, seen)


def expected_reports(counts: Counter[tuple[str | None, str]]) -> dict[Any, list[int]]:
    """The reporter's rule per (device, error_type) seen ``c`` times within one second: one
    report at once, and one for the ``c - 1`` held back when the second is over (the count
    under ``details.occurrences`` when it is more than one)."""
    return {key: [1] if c == 1 else [1, c - 1] for key, c in counts.items()}


def reports_by_key(errors: list[dict[str, Any]]) -> dict[Any, list[int]]:
    out: dict[Any, list[int]] = {}
    for e in errors:
        n = e["details"].get("occurrences", 1)
        assert n != 1 or "occurrences" not in e["details"]  # present only when > 1
        out.setdefault((e["device"], e["error_type"]), []).append(n)
    return out


def test_a_burst_is_reported_aggregated_per_device_and_error_type(
    app_wire: tuple[Wire, list[tuple[str, int]]],
) -> None:
    wire, seen = app_wire

    @settings(FUZZ, max_examples=100)
    @given(
        st.lists(
            st.tuples(APP_TOPICS, payloads(APP_VALID, ["level"])), min_size=1, max_size=25
        ),  # < the command queue (64): nothing overflows
    )
    def burst(messages: list[tuple[str, bytes]]) -> None:
        wire.reopen()
        counts: Counter[tuple[str | None, str]] = Counter()
        handled = 0
        for topic, payload in messages:
            outcome = app_outcome(topic, payload)
            if outcome.error_type is not None:
                counts[(outcome.device, outcome.error_type)] += 1
            handled += isinstance(outcome.handled, tuple)
        before, seen_before = len(wire.errors()), len(seen)
        for topic, payload in messages:  # no time passes: one second's burst
            wire.deliver(topic, payload)
        now = reports_by_key(wire.errors()[before:])
        assert now == {key: [1] for key in counts}
        wire.h.advance(1.0)  # the reporter's flush
        assert reports_by_key(wire.errors()[before:]) == expected_reports(counts)
        assert len(seen) - seen_before == handled
        wire.assert_alive()

    burst()
    probe_app(wire, seen)


def test_a_flood_of_hostile_commands_is_reported_at_a_bounded_rate(
    app_wire: tuple[Wire, list[tuple[str, int]]],
) -> None:
    """2,000 of each kind without settling: the JSON device's queue overflows (the oldest
    dropped, counted under ``dropped``); every message is accounted for in a handful of
    reports."""
    wire, seen = app_wire
    h, n = wire.h, 2000
    before = len(wire.errors())
    for i in range(n):
        h.mqtt.deliver(f"{P}/json/set", f"not json {i}")  # refused by the handler
        h.mqtt.deliver(f"{P}/text/set", b"\xff\xfe")  # refused by the router
        h.mqtt.deliver(f"{P}/nosuch{i % 7}/set", "x")  # no such device
    h.clock.settle_now()
    h.wait_until_idle()
    h.advance(1.0)
    errors = wire.errors()[before:]
    assert len(errors) <= 8, [(e["device"], e["error_type"]) for e in errors]
    total: Counter[tuple[str | None, str]] = Counter()
    for e in errors:
        key = "dropped" if e["error_type"] == "command_overflow" else "occurrences"
        total[(e["device"], e["error_type"])] += e["details"].get(key, 1)
    dropped = total.pop(("json", "command_overflow"), 0)
    assert total == {
        ("json", "invalid_payload"): n - dropped,
        ("text", "invalid_payload"): n,
        (None, "error"): n,
    }
    h.advance(1.0)
    probe_app(wire, seen)


def test_memory_stays_bounded_across_a_batch_of_megabyte_payloads(
    app_wire: tuple[Wire, list[tuple[str, int]]],
) -> None:
    wire, seen = app_wire
    # Made before measuring: what is measured is what the agent allocates for them.
    batch = [
        (f"{P}/json/set", b"\xff" * MiB),
        (f"{P}/text/set", b"[" * MiB),
        (f"{P}/nosuch/set", b"x" * MiB),
        (f"{P}/json/calibrate/set", b"\0" * MiB),
        (f"{P}/json/set", b"[" * LIMIT),  # at the limit: decoded and parsed, then refused
        (f"{P}/json/set", b'{"level":' + b"[" * 40_000 + b"]" * 40_000 + b"}"),
        (f"{P}/text/set", b"y" * LIMIT),  # accepted, only its length is kept
    ] * 6
    wire.deliver(f"{P}/text/set", b"warm up")
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for topic, payload in batch:
            wire.deliver(topic, payload)
        wire.h.advance(1.0)  # flush what the reporter held back (and its references)
        for topic in (f"{P}/text/set", f"{P}/json/set"):  # the devices' last commands go
            wire.deliver(topic, b"1")
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One message in flight at a time: its decoded text (a str of up to LIMIT characters)
    # and the parser's work, never the batch (~9 MiB of payloads, ~2 MiB decoded).
    assert peak - base < 3 * MiB, f"peak {(peak - base) / MiB:.2f} MiB over the baseline"
    assert current - base < MiB // 8, f"kept {(current - base) / MiB:.2f} MiB"
    probe_app(wire, seen)


# -- (b) the daemon's built-ins that take commands ---------------------------------------------

D = "agent"
DAEMON_DEVICES = ["lamp", "relay", "door", "pi"]  # "meter" is telemetry: no commands
DAEMON_VALID = [
    "ON",
    "off",
    " TOGGLE\n",
    '{"state": "ON"}',
    '{"state": " toggle "}',
    "ok",
    '{"command": "ok"}',
    "",
]


def daemon_config(tmp_path: Path) -> Path:
    (tmp_path / "reading").write_text("21.5\n")
    path = tmp_path / "agent.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [store]
            backend = "memory"

            [[device]]
            type = "gpio_output"
            name = "lamp"
            pin = 18

            [[device]]
            type = "gpio_output"
            name = "relay"
            pin = 23
            active_low = true
            initial = "restore"

            [[device]]
            type = "gpio_input"
            name = "door"
            pin = 17
            debounce = 0

            [[device]]
            type = "exec_command"
            name = "pi"
            commands = {{ ok = ["/bin/true"] }}

            [[device]]
            type = "file"
            name = "meter"
            path = "{tmp_path}/reading"
            """
        )
    )
    return path


def gpio_word(text: str) -> str | None:
    """What a ``gpio_output`` command asks for (ON, OFF, TOGGLE) or None: the wire contract
    of the built-in, written out here rather than taken from ``parse_command``."""
    stripped = text.strip()
    word: object = stripped
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except (ValueError, RecursionError):
            return None
        if not isinstance(data, dict) or set(data) != {"state"}:
            return None
        word = data["state"]
    upper = word.strip().upper() if isinstance(word, str) else None
    return upper if upper in ("ON", "OFF", "TOGGLE") else None


def exec_choice(text: str) -> bool:
    """``exec_command`` takes its configured name, plain or as ``{"command": name}``."""
    stripped = text.strip()
    if len(stripped) > 1024:
        return False
    if not stripped.startswith("{"):
        return stripped == "ok"
    try:
        data = json.loads(stripped)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, dict) and len(data) == 1 and data.get("command") == "ok"


class DaemonModel:
    """The built-ins' side of the model; tracks the outputs' levels for TOGGLE."""

    def __init__(self) -> None:
        self.level = {"lamp": False, "relay": False}

    def sync(self, h: AppHarness) -> None:
        """Take the outputs' levels from their last states (after a failed example)."""
        for device in self.level:
            self.level[device] = h.last_state(device) == {"state": "ON"}

    def __call__(self, device: str, sub: str | None, text: str) -> Outcome:
        if device == "door" or sub is not None:
            return Outcome("error", device)  # LookupError: no handler for that topic
        if device == "pi":
            if not exec_choice(text):
                return Outcome("invalid_payload", device)
            return Outcome(handled={"command": "ok", "result": "ok", "exit_code": 0})
        word = gpio_word(text)
        if word is None:
            return Outcome("invalid_payload", device)
        on = not self.level[device] if word == "TOGGLE" else word == "ON"
        return Outcome(handled={"state": "ON" if on else "OFF"})


@pytest.fixture
def daemon_wire(tmp_path: Path) -> Iterator[tuple[Wire, MockFactory]]:
    previous = Device.pin_factory
    pins = MockFactory()
    Device.pin_factory = pins
    try:
        config, problems = check_config(daemon_config(tmp_path), env_file=None, environ={})
        assert problems == [] and config is not None, [str(p) for p in problems]
        with AppHarness(build_app(config), raise_errors=False) as h:
            yield Wire(h, DAEMON_DEVICES), pins
    finally:
        pins.reset()
        Device.pin_factory = previous


def check_daemon_message(
    wire: Wire,
    pins: MockFactory,
    model: DaemonModel,
    topic: str,
    payload: bytes,
    retained: bool,
) -> None:
    outcome = route(D, model, set(DAEMON_DEVICES), topic, payload, retained)
    state_counts = {d: len(wire.h.messages_for(f"{D}/{d}/state")) for d in DAEMON_DEVICES}
    wire.assert_one_message(topic, payload, retained, outcome)
    new_states = {
        d: [m.json() for m in wire.h.messages_for(f"{D}/{d}/state")[state_counts[d] :]]
        for d in DAEMON_DEVICES
    }
    target = command_target(D, topic)
    device = target[0] if target is not None and outcome.handled is not None else None
    for name, states in new_states.items():
        if name != device:
            assert states == [], (name, states)
    if device is None:
        return
    (state,) = new_states[device]
    assert {k: state[k] for k in outcome.handled} == outcome.handled
    if device in model.level:
        model.level[device] = state["state"] == "ON"
    pin, active_low = {"lamp": (18, False), "relay": (23, True)}.get(device, (None, False))
    if pin is not None:
        assert pins.pin(pin).state is (model.level[device] != active_low)


def probe_daemon(wire: Wire, pins: MockFactory, model: DaemonModel) -> None:
    wire.assert_alive()
    for device, payload in [("lamp", "TOGGLE"), ("relay", "on"), ("pi", '{"command":"ok"}')]:
        check_daemon_message(wire, pins, model, f"{D}/{device}/set", payload.encode(), False)
    pins.pin(17).drive_low()  # the input still follows its pin
    wire.h.advance(0)
    wire.h.assert_state("door", {"state": "ON"})


def test_daemon_builtins_take_hostile_commands(
    daemon_wire: tuple[Wire, MockFactory],
) -> None:
    wire, pins = daemon_wire
    model = DaemonModel()

    @FUZZ
    @given(
        topic=st.one_of(
            topics(
                D,
                [*DAEMON_DEVICES, "meter"],
                [f"{D}/{d}/set" for d in ["lamp", "relay", "pi", "door", "meter"]],
            ),
            st.just("homeassistant/status"),  # discovery listens there
        ),
        payload=payloads(DAEMON_VALID, ["state", "command"]),
        retained=st.sampled_from([False] * 9 + [True]),
    )
    def one(topic: str, payload: bytes, retained: bool) -> None:
        wire.reopen()  # first: whatever the example before did, even failing half-way
        model.sync(wire.h)
        check_daemon_message(wire, pins, model, topic, payload, retained)
        wire.assert_alive()

    one()
    probe_daemon(wire, pins, model)


def test_gpio_output_deeply_nested_json_is_an_invalid_payload(
    daemon_wire: tuple[Wire, MockFactory],
) -> None:
    """Regression: ``{"state": [[[...]]]}`` 20,000 deep (40 KB, under the limit) made
    ``json.loads`` raise RecursionError, reported as a failing handler (``error``)."""
    wire, pins = daemon_wire
    deep = '{"state":' + "[" * 20000 + "]" * 20000 + "}"
    with pytest.raises(InvalidPayload, match="nested too deeply"):
        parse_command(deep, current=False)
    before = len(wire.errors())
    wire.deliver(f"{D}/lamp/set", deep.encode())
    (error,) = wire.errors()[before:]
    assert error["error_type"] == "invalid_payload"
    assert error["device"] == "lamp"
    assert "nested too deeply" in error["message"]
    assert pins.pin(18).state is False
    wire.h.advance(1.0)
    wire.deliver(f"{D}/lamp/set", b"ON")  # and it goes on serving
    assert pins.pin(18).state is True
    wire.h.assert_state("lamp", {"state": "ON"})


def test_gpio_output_does_not_echo_a_big_payload_into_its_error() -> None:
    payload = "BLINK" * 50_000
    with pytest.raises(InvalidPayload) as info:
        parse_command(payload, current=False)
    assert len(str(info.value)) < 200 and "(250000 characters)" in str(info.value)
    with pytest.raises(InvalidPayload) as info:
        parse_command('{"state": "ON", "x": "' + "y" * 200_000 + '"}', current=False)
    assert len(str(info.value)) < 200


# -- what the fuzzing found (fixed) --------------------------------------------------------------


def test_malformed_command_topics_a_broker_delivers_are_reported(
    app_wire: tuple[Wire, list[tuple[str, int]]], caplog: pytest.LogCaptureFixture
) -> None:
    wire, _seen = app_wire
    malformed = [f"{P}//set", f"{P}/json//set", f"{P}/ json/set", f"{P}/js\x01on/set"]
    assert all(subscribed(P, t) and command_target(P, t) is None for t in malformed)
    caplog.set_level("DEBUG", logger="agent")
    for topic in malformed:
        before = len(wire.errors())
        wire.deliver(topic, b"open")
        assert len(wire.errors()) == before + 1, f"no error payload for {topic!r}"
        shown = ascii(topic)  # no raw control characters in a log line
        assert any(shown in r.getMessage() for r in caplog.records), f"no log for {topic!r}"
        wire.reopen()


@pytest.mark.parametrize(
    ("prefix", "device", "delivered"),
    [
        ("home.gas", "valve", "home/gas/valve/set"),  # the prefix's dot
        ("home.gas", "valve", "home/gas/set"),  # ... on the root topic
        ("home.gas", "valve", "home/gas/valve/calibrate/set"),  # ... on a sub-topic
        ("home", "v.1", "home/v/1/set"),  # a device name's dot
    ],
)
def test_a_command_topic_split_at_its_dots_is_reported_with_the_reason(
    prefix: str, device: str, delivered: str, caplog: pytest.LogCaptureFixture
) -> None:
    """RabbitMQ makes every ``.`` a level separator: it delivers ``home.gas/valve/set`` as
    ``home/gas/valve/set``. That is no command of ours, but it was meant as one: it is
    refused with the reason and the fix, never dropped without a word (it was)."""
    handled: list[str] = []
    app = App(prefix, heartbeat_interval=None)

    @app.command(device)
    def command(payload: str) -> dict[str, str]:
        handled.append(payload)
        return {"state": payload}

    caplog.set_level("WARNING", logger="agent")
    with AppHarness(app, raise_errors=False) as h:
        wire = Wire(h, [device])
        wire.deliver(delivered, b"open")
        wire.deliver(f"{prefix}/{device}/set", b"close")  # as any other broker delivers it
        assert handled == ["close"]
        errors = [m.json() for m in h.messages_for(f"{prefix}/error")]
        assert len(errors) == 1, errors
        assert errors[0]["details"] == {"topic": delivered}
        assert "each '.' made a level separator, as RabbitMQ does" in errors[0]["message"]
        assert "use no dots in mqtt.topic_prefix, device names or sub-topics" in caplog.text
        wire.deliver(delivered, b"")  # what clearing a retained command looks like: ignored
        assert len(h.messages_for(f"{prefix}/error")) == 1


def test_a_sub_topic_of_a_dotted_device_is_no_topic_rabbitmq_can_deliver() -> None:
    """``home/+/+/set`` has four levels; ``home.v.1.calibrate.set`` has five: RabbitMQ
    drops it at the broker. The agent knows of no such topic, so says nothing of one."""
    app = App("home", heartbeat_interval=None)

    @app.command("v.1")
    def command(payload: str) -> None: ...

    with AppHarness(app, raise_errors=False) as h:
        Wire(h, ["v.1"]).deliver("home/v/1/calibrate/set", b"open")
        assert h.messages_for("home/error") == []


def test_a_foreign_topic_without_dots_in_our_names_stays_unreported() -> None:
    app = App("home", heartbeat_interval=None)

    @app.command("valve")
    def valve(payload: str) -> dict[str, str]:
        return {"state": payload}

    with AppHarness(app, raise_errors=False) as h:
        wire = Wire(h, ["valve"])
        wire.deliver("other/valve/set", b"open")  # not ours, and nothing says it was meant
        wire.deliver("home/valve/set", b"close")
        assert h.last_state("valve") == {"state": "close"}
        assert h.messages_for("home/error") == []


def test_an_app_command_handler_refusing_payloads_is_never_given_up() -> None:
    app = App(P, heartbeat_interval=None)

    @app.command("valve")
    def valve(payload: str) -> dict[str, str]:
        if payload not in ("open", "close"):
            raise InvalidPayload(f"expected open or close, got {payload[:20]!r}")
        return {"state": payload}

    with AppHarness(app, raise_errors=False) as h:
        for i in range(20):
            h.send_command("valve", f"junk {i}")
            h.advance(6)  # past any restart cooldown
        h.send_command("valve", "open")
        assert h.last_state("valve") == {"state": "open"}
        availability = h.messages_for(f"{P}/valve/availability")
        assert [m.payload for m in availability] == ["online"]  # never restarted
        errors = [m.json() for m in h.messages_for(f"{P}/valve/error")]
        assert errors and {e["error_type"] for e in errors} == {"invalid_payload"}


@pytest.mark.parametrize(
    "channel", ["a/b", "+", "#", "x\x00y", "x\x01y", " x", "state/../error", "x\u0085"]
)
def test_a_hostile_channel_name_at_run_time_is_refused_and_nothing_is_published(
    channel: str,
) -> None:
    """Topic injection at run time: a handler publishing on a channel made from input (a
    payload naming it) cannot reach another topic; the refusal is reported, the device
    keeps serving."""
    app = App(P, heartbeat_interval=None)

    @app.command("relay")
    def relay(payload: str, ctx: DeviceContext) -> dict[str, str]:
        ctx.publish(payload, "x")
        return {"published": payload}

    with AppHarness(app, raise_errors=False) as h:
        before = {m.topic for m in h.published}
        h.send_command("relay", channel)
        new = [m for m in h.published if m.topic not in before]
        assert [m.topic for m in new] == [f"{P}/error", f"{P}/relay/error"], new
        assert all(m.json()["error_type"] == "error" for m in new)
        h.send_command("relay", "fine")
        assert h.last_state("relay") == {"published": "fine"}
        assert any(m.topic == f"{P}/relay/fine" for m in h.published)
