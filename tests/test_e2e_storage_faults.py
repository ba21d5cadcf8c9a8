"""Storage faults end to end: a real ``python -m agent`` on a real mosquitto, with its state
directory made read-only, its disk made full, its store file corrupt, its database locked.

Each test shows, on the wire and in the log, what issue 14 asks for: the fault is reported
once per failure streak (one ``store_save_failed`` payload on ``{prefix}/error`` and on the
device's error topic, one ERROR line, however many saves fail), the agent keeps running
(the counter goes on in memory without a gap, the heartbeat stays ``online``), and once the
medium works again the next save gets through (one INFO line "works again"), so the file
holds the latest state; after SIGTERM the agent exits 0 and the store holds the last value
it published.

How the faults are made, root included (CI runs the tests as root):

* read-only: the directory (and an existing file) lose their write bits. Root ignores modes,
  so as root the agent runs without ``CAP_DAC_OVERRIDE`` (``setpriv --bounding-set``): still
  uid 0, owner of everything the test made, but held to the modes like anybody. (Running it
  as ``nobody`` would not work with an interpreter under ``/root``, mode 0700.)
* full disk: ``RLIMIT_FSIZE`` set on the running agent (``prlimit``), and lifted again; the
  kernel then refuses every write past the limit (EFBIG: Python ignores SIGXFSZ). The limit is
  per process and applies to the agent's log file too, so in this module the agent's log goes
  to a pipe, read by a thread of the test.
* corrupt: garbage written over the store file before the start.
* locked: another process holds ``BEGIN EXCLUSIVE`` on the database.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_helpers import agent_env, write_app
from store_helpers import KINDS, LineReader, file_name, make_store, send, start_child, stop

from agent.testing import eventually
from agent.testing.mosquitto import Mosquitto, Observer

pytestmark = pytest.mark.integration

BOUND = 10.0  # seconds: the longest any single wait may take before the test fails
PREFIX = "persisted"
STATE = f"{PREFIX}/counter/state"
ERRORS = (f"{PREFIX}/error", f"{PREFIX}/counter/error")  # global, and the device's own
FAILED_SAVES = 5  # saves that must fail in a streak before the medium is repaired

COUNTER_APP = """
import pathlib
import agent

HERE = pathlib.Path(__file__).parent
app = agent.App("persisted", heartbeat_interval=0.5, store=agent.{store})


@app.telemetry("counter", interval=0.05, persist=agent.SaveOnPublish())
def counter(store: agent.DeviceStore) -> dict:
    store["n"] = store.get("n", 0) + 1
    return {{"n": store["n"]}}
"""

STORES = {
    "json": 'JsonFileStore(HERE / "state" / "state.json")',
    # A short busy timeout: a locked database costs each save 0.3 s, not 5.
    "sqlite": 'SqliteStore(HERE / "state" / "state.db", busy_timeout=0.3)',
}

SAVE_FAILED = "could not save the state of 'counter'"
WORKS_AGAIN = re.compile(r"saving the state of 'counter' to .* works again \(after (\d+) failed")


# --------------------------------------------------------------------------- the agent


class PipedAgent:
    """``python -m agent --config PATH`` with its stdout and stderr read by a thread.

    Not a file: a process under ``RLIMIT_FSIZE`` could not write its log to one (the limit
    is per process), and a pipe is not subject to it. ``prefix`` goes before the command
    (``setpriv ...``).
    """

    def __init__(self, config: Path, prefix: list[str]) -> None:
        self._cond = threading.Condition()
        self._lines: list[str] = []
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-X", "faulthandler", "-m", "agent", "--config", str(config)],
            cwd=config.parent,
            env=agent_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, name="agent-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self._lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()

    def log(self) -> str:
        with self._cond:
            return "\n".join(self._lines)

    def lines(self, text: str | re.Pattern[str]) -> list[str]:
        """The log lines so far that contain ``text`` (a string or a pattern)."""
        with self._cond:
            return [
                line
                for line in self._lines
                if (text.search(line) if isinstance(text, re.Pattern) else text in line)
            ]

    def wait_for_line(self, text: str | re.Pattern[str], timeout: float = BOUND) -> str:
        with self._cond:
            if not self._cond.wait_for(lambda: self.lines(text), timeout):
                raise AssertionError(f"no log line with {text!r} in {timeout} s:\n{self.log()}")
            return self.lines(text)[0]

    def terminate(self, timeout: float = BOUND) -> int:
        """SIGTERM, then the exit code (an overrun fails with the stacks of every thread)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler dumps every thread
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(BOUND)
            self._reader.join(BOUND)
            raise AssertionError(f"no exit within {timeout} s of SIGTERM:\n{self.log()}") from None
        self._reader.join(BOUND)  # the whole log is in
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(BOUND)
        self._reader.join(BOUND)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def start_agent() -> Iterator[Callable[..., PipedAgent]]:
    """Start ``python -m agent --config PATH`` (killed at teardown if still running)."""
    started: list[PipedAgent] = []

    def start(config: Path, *, prefix: list[str] | None = None) -> PipedAgent:
        agent = PipedAgent(config, prefix or [])
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.close()


DAC_CAPABILITIES = ("dac_override", "dac_read_search", "fowner")
_DAC_BITS = (1 << 1) | (1 << 2) | (1 << 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


def held_to_modes() -> list[str]:
    """The command prefix that makes the agent obey file modes: nothing for a user other
    than root; for root, ``setpriv`` dropping the capabilities that bypass modes (from the
    bounding set, so the exec'd interpreter never gets them back)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail(  # util-linux is essential on Debian; elsewhere it must be installed
            "running as root without setpriv, modes cannot hold: apt-get install util-linux",
            pytrace=False,
        )
    drop = ",".join(f"-{name}" for name in DAC_CAPABILITIES)
    return [setpriv, "--inh-caps=-all", f"--bounding-set={drop}", "--"]


def assert_held_to_modes(agent: PipedAgent) -> None:
    """The agent process really lacks the capabilities that would ignore the modes."""
    if os.geteuid() != 0:
        return
    status = Path(f"/proc/{agent.proc.pid}/status").read_text()
    (effective,) = re.findall(r"^CapEff:\s*([0-9a-f]+)$", status, re.M)
    assert not int(effective, 16) & _DAC_BITS, status


# --------------------------------------------------------------------------- what was seen


def counts(observer: Observer) -> list[int]:
    return [json.loads(m.payload)["n"] for m in observer.messages(STATE)]


def last_count(observer: Observer) -> int:
    seen = counts(observer)
    return seen[-1] if seen else 0


def error_payloads(observer: Observer, topic: str) -> list[dict[str, object]]:
    return [json.loads(m.payload) for m in observer.messages(topic)]


def heartbeats(observer: Observer, since: int = 0) -> list[dict[str, object]]:
    """The JSON heartbeats among the messages recorded from index ``since`` on."""
    return [
        json.loads(m.payload)
        for m in observer.messages()[since:]
        if m.topic == f"{PREFIX}/status" and m.payload.startswith(b"{")
    ]


def stored(kind: str, path: Path) -> object:
    """What the store file holds for the counter, read through a store of our own."""
    store = make_store(kind, path)
    try:
        return store.load("counter")
    finally:
        store.close()


def wait_count(observer: Observer, agent: PipedAgent, at_least: int, what: str) -> None:
    eventually(lambda: last_count(observer) >= at_least, BOUND, what, describe=agent.log)


# --------------------------------------------------------------------------- the streak


def wait_for_the_report(
    observer: Observer, agent: PipedAgent, error_type: str = "store_save_failed"
) -> dict[str, object]:
    """The first error payload of ``error_type`` on the global topic (and the same on the
    device's); returned, parsed."""
    payloads = [
        json.loads(
            observer.wait_for(
                topic, lambda m: json.loads(m.payload)["error_type"] == error_type, timeout=BOUND
            ).payload
        )
        for topic in ERRORS
    ]
    assert payloads[0] == payloads[1], payloads  # one report, published to both topics
    assert payloads[0]["device"] == "counter", payloads[0]
    return payloads[0]


def device_statuses(observer: Observer, since: int) -> list[str]:
    """The counter's status in every heartbeat from message ``since`` on; each heartbeat
    must say the agent is ``online``."""
    beats = heartbeats(observer, since)
    for beat in beats:
        assert beat["status"] == "online", beat
    return [beat["devices"]["counter"]["status"] for beat in beats]  # type: ignore[index]


def assert_running(observer: Observer, agent: PipedAgent, since: int) -> None:
    """Heartbeats since message ``since``: ``online``, and the counter never down (``busy``
    when a save waited longer than the interval; ``starting`` in the heartbeat sent on
    connecting, which may follow a report made while connecting); at least one says so."""
    up = ("ok", "busy")
    eventually(
        lambda: any(s in up for s in device_statuses(observer, since)),
        BOUND,
        "a heartbeat with the counter up",
        describe=agent.log,
    )
    statuses = device_statuses(observer, since)
    assert set(statuses) <= {*up, "starting"}, statuses


def keep_running_while_failing(observer: Observer, agent: PipedAgent) -> int:
    """While saving fails: the counter goes on for FAILED_SAVES more readings (each one a
    failed save) and the heartbeats say the agent and the counter are up. Returns the last
    value published before the caller repairs the medium."""
    since = len(observer.messages())
    wait_count(observer, agent, last_count(observer) + FAILED_SAVES, "readings while failing")
    assert_running(observer, agent, since)
    return last_count(observer)


def wait_until_it_works_again(
    agent: PipedAgent, kind: str, path: Path, before_repair: int, observer: Observer
) -> int:
    """One INFO line "works again" (its count of failed saves at least FAILED_SAVES); the
    file then holds at least the value published before the repair. Returns that count."""
    line = agent.wait_for_line(WORKS_AGAIN)
    match = WORKS_AGAIN.search(line)
    assert match is not None
    failed = int(match.group(1))
    assert failed >= FAILED_SAVES, line
    on_disk = stored(kind, path)
    assert isinstance(on_disk, dict) and on_disk["n"] >= before_repair, (before_repair, on_disk)
    # Published before it was saved (SaveOnPublish); the observer may lag a little.
    wait_count(observer, agent, on_disk["n"], "the stored value on the wire")
    return failed


def assert_one_report(observer: Observer, agent: PipedAgent, error_type: str) -> None:
    """Exactly one error payload on each error topic, of ``error_type``; one ERROR line."""
    for topic in ERRORS:
        types = [p["error_type"] for p in error_payloads(observer, topic)]
        assert types == [error_type], (topic, types)
    assert len(agent.lines(SAVE_FAILED)) == 1, agent.log()
    assert len(agent.lines(WORKS_AGAIN)) == 1, agent.log()


def stop_and_check(
    observer: Observer, agent: PipedAgent, kind: str, path: Path, first: int
) -> None:
    """SIGTERM: exit 0, every value from ``first`` on published once, in order, and the
    store holds the last one."""
    assert agent.terminate() == 0, agent.log()
    # "offline" is the agent's last publish: whatever it published before has arrived.
    observer.wait_for(f"{PREFIX}/status", lambda m: m.payload == b"offline", timeout=BOUND)
    seen = counts(observer)
    assert seen == list(range(first, first + len(seen))), seen  # no gap, no repeat
    assert stored(kind, path) == {"n": seen[-1]}
    availability = [m.payload for m in observer.messages(f"{PREFIX}/counter/availability")]
    assert availability[-1] == b"offline" and b"offline" not in availability[:-1], availability


def state_file(tmp_path: Path, kind: str) -> Path:
    return tmp_path / "state" / file_name(kind)


# --------------------------------------------------------------------------- the tests


def test_state_directory_turns_read_only_while_running(
    broker: Mosquitto, observer: Observer, tmp_path: Path, start_agent
) -> None:
    """JSON only: every save writes a new file, so a directory turned read-only stops the
    next one. (SQLite writes into files it opened at the start, and a mode is checked when
    a file is opened: its saves go on. See the next test for SQLite.)"""
    path = state_file(tmp_path, "json")
    config = write_app(tmp_path, broker.port, COUNTER_APP.format(store=STORES["json"]))
    agent = start_agent(config, prefix=held_to_modes())
    wait_count(observer, agent, 3, "three readings")
    assert_held_to_modes(agent)
    assert stored("json", path) is not None  # saving works, the file is there

    path.parent.chmod(0o555)
    payload = wait_for_the_report(observer, agent)
    assert "Permission denied" in str(payload["details"]["reason"]), payload  # type: ignore[index]
    before_repair = keep_running_while_failing(observer, agent)
    path.parent.chmod(0o700)

    wait_until_it_works_again(agent, "json", path, before_repair, observer)
    assert_one_report(observer, agent, "store_save_failed")
    stop_and_check(observer, agent, "json", path, first=1)


@pytest.mark.parametrize("kind", KINDS)
def test_state_directory_read_only_from_the_start(
    broker: Mosquitto, observer: Observer, tmp_path: Path, start_agent, kind: str
) -> None:
    """The directory is there but read-only when the agent starts (a read-only mount, say),
    with no store in it yet: the counter runs from 1, saves fail, then the directory turns
    writable and the store is created with the latest value."""
    path = state_file(tmp_path, kind)
    path.parent.mkdir(mode=0o555)
    config = write_app(tmp_path, broker.port, COUNTER_APP.format(store=STORES[kind]))
    agent = start_agent(config, prefix=held_to_modes())
    payload = wait_for_the_report(observer, agent)
    assert_held_to_modes(agent)
    assert "Permission denied" in str(payload["details"]["reason"]), payload  # type: ignore[index]
    before_repair = keep_running_while_failing(observer, agent)
    assert not path.exists()
    path.parent.chmod(0o700)

    wait_until_it_works_again(agent, kind, path, before_repair, observer)
    assert_one_report(observer, agent, "store_save_failed")
    stop_and_check(observer, agent, kind, path, first=1)


@pytest.mark.parametrize(
    "kind",
    [
        "json",
        "sqlite",  # was a failed device init: SQLite wants to create -wal/-shm to load
    ],
)
def test_existing_state_in_a_read_only_directory(
    broker: Mosquitto, observer: Observer, tmp_path: Path, start_agent, kind: str
) -> None:
    """The state of an earlier run lies in a directory that is read-only at the start, the
    file read-only too: the counter goes on from the stored value, only saving fails."""
    path = state_file(tmp_path, kind)
    path.parent.mkdir(mode=0o700)
    earlier = make_store(kind, path)
    earlier.save("counter", {"n": 100})
    earlier.close()
    path.chmod(0o444)
    path.parent.chmod(0o555)
    config = write_app(tmp_path, broker.port, COUNTER_APP.format(store=STORES[kind]))
    agent = start_agent(config, prefix=held_to_modes())
    first = json.loads(observer.wait_for(f"{PREFIX}/error", timeout=BOUND).payload)
    assert first["error_type"] == "store_save_failed", first
    wait_for_the_report(observer, agent)
    assert_held_to_modes(agent)
    assert counts(observer)[0] == 101  # loaded from the read-only directory
    before_repair = keep_running_while_failing(observer, agent)
    path.parent.chmod(0o700)
    path.chmod(0o600)

    wait_until_it_works_again(agent, kind, path, before_repair, observer)
    assert_one_report(observer, agent, "store_save_failed")
    stop_and_check(observer, agent, kind, path, first=101)


@pytest.mark.parametrize("kind", KINDS)
def test_full_disk_while_running(
    broker: Mosquitto, observer: Observer, tmp_path: Path, start_agent, kind: str
) -> None:
    """RLIMIT_FSIZE of 0 set on the running agent: no write may extend any file (a disk
    with no free block left), then lifted (space freed)."""
    path = state_file(tmp_path, kind)
    config = write_app(tmp_path, broker.port, COUNTER_APP.format(store=STORES[kind]))
    agent = start_agent(config)
    wait_count(observer, agent, 3, "three readings")
    pid = agent.proc.pid
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)

    resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, hard))
    try:
        payload = wait_for_the_report(observer, agent)
        before_repair = keep_running_while_failing(observer, agent)
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
    # The kernel says EFBIG: the JSON store passes on "File too large", SQLite calls it a
    # "disk I/O error".
    expected = "File too large" if kind == "json" else "disk I/O error"
    assert expected in str(payload["details"]["reason"]), payload  # type: ignore[index]

    wait_until_it_works_again(agent, kind, path, before_repair, observer)
    assert_one_report(observer, agent, "store_save_failed")
    stop_and_check(observer, agent, kind, path, first=1)


@pytest.mark.parametrize("kind", KINDS)
def test_corrupt_store_file_at_start(
    broker: Mosquitto, observer: Observer, tmp_path: Path, start_agent, kind: str
) -> None:
    """Garbage where the store should be: moved aside (kept), reported once as
    ``store_corrupt`` (the store as a whole: global error topic only), the counter starts
    afresh and its state is saved in a fresh store."""
    path = state_file(tmp_path, kind)
    path.parent.mkdir(mode=0o700)
    garbage = b"\x89PNG this is not what you think" * 100
    path.write_bytes(garbage)
    config = write_app(tmp_path, broker.port, COUNTER_APP.format(store=STORES[kind]))
    agent = start_agent(config)
    message = observer.wait_for(f"{PREFIX}/error", timeout=BOUND)
    payload = json.loads(message.payload)
    assert payload["error_type"] == "store_corrupt", payload
    assert payload["device"] is None, payload
    details = payload["details"]
    assert isinstance(details, dict) and details["path"] == str(path), payload
    aside = Path(str(details["moved_to"]))
    assert aside.parent == path.parent and aside.name.startswith(f"{path.name}.corrupt-")
    assert aside.read_bytes() == garbage
    line = agent.wait_for_line(f"store file {path} is corrupt")
    assert f"moved it aside to {aside}" in line, line

    wait_count(observer, agent, 10, "ten readings")
    assert_running(observer, agent, since=0)
    on_disk = stored(kind, path)
    assert isinstance(on_disk, dict) and on_disk["n"] >= 1, on_disk  # saved afresh
    stop_and_check(observer, agent, kind, path, first=1)
    assert [json.loads(m.payload)["error_type"] for m in observer.messages("#")
            if m.topic.endswith("/error")] == ["store_corrupt"]  # fmt: skip
    assert len(agent.lines("is corrupt")) == 1, agent.log()
    assert not agent.lines(SAVE_FAILED), agent.log()


def test_database_locked_by_another_process(
    broker: Mosquitto, observer: Observer, tmp_path: Path, start_agent
) -> None:
    """Another process holds the database's write lock: each save waits its busy timeout
    (0.3 s) and fails; the counter goes on (slower); released, the next save commits."""
    path = state_file(tmp_path, "sqlite")
    config = write_app(tmp_path, broker.port, COUNTER_APP.format(store=STORES["sqlite"]))
    agent = start_agent(config)
    wait_count(observer, agent, 3, "three readings")

    holder = start_child("lock", str(path))
    try:
        assert holder.stdout is not None
        lines = LineReader(holder.stdout)
        assert lines.readline() == "locked"
        payload = wait_for_the_report(observer, agent)
        assert "locked" in str(payload["details"]["reason"]), payload  # type: ignore[index]
        before_repair = keep_running_while_failing(observer, agent)
        send(holder, "release")
        assert lines.readline() == "released"
        assert holder.wait(BOUND) == 0
    finally:
        stop(holder)

    wait_until_it_works_again(agent, "sqlite", path, before_repair, observer)
    assert_one_report(observer, agent, "store_save_failed")
    stop_and_check(observer, agent, "sqlite", path, first=1)
