"""Names and MQTT topics, in one place.

The wire contract (kept from the API reference; consumers depend on it)::

    {prefix}/{device}/state            root device: {prefix}/state         JSON, retained
    {prefix}/{device}/set              root device: {prefix}/set           commands in
    {prefix}/{device}/{sub}/set        root device: {prefix}/{sub}/set     commands in
    {prefix}/{device}/availability     root device: {prefix}/availability  online/offline
    {prefix}/{device}/error            and always {prefix}/error           error JSON
    {prefix}/status                                                         heartbeat / offline

A *root* device is the app's unnamed main device: its topics sit right under the prefix.

Every name that becomes one topic level (device names, command sub-topics, channels) goes
through :func:`validate_name` when it is registered. The topic builders of :class:`Topics`
trust their arguments and do not validate again: they run on every publish.
"""

from __future__ import annotations

__all__ = ["Topics", "prefix_problem", "validate_name", "validate_prefix", "validate_sub_topic"]

# MQTT's wildcards and level separator: a name holding one would change what a topic means.
_FORBIDDEN = {"+": "an MQTT wildcard '+'", "#": "an MQTT wildcard '#'", "/": "a '/'"}


def _is_control(char: str) -> bool:
    """Unicode category Cc, which is exactly C0, DEL and C1 (no need to load unicodedata)."""
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F


def _problem(text: str) -> str | None:
    """Return why ``text`` cannot be one topic level, or ``None`` when it can."""
    if text == "":
        return "it is empty"
    if text != text.strip():
        return "it has leading or trailing whitespace"
    for char in text:
        if char in _FORBIDDEN:
            return f"it contains {_FORBIDDEN[char]}"
        if char == "\0":
            return "it contains a NUL character"
        if _is_control(char):
            return f"it contains the control character U+{ord(char):04X}"
    return None


def validate_name(name: str, what: str = "device") -> str:
    """Return ``name`` if it can be one MQTT topic level, else raise :class:`ValueError`.

    Refused: empty names, leading or trailing whitespace, ``+``, ``#``, ``/``, NUL and any
    other control character (Unicode category Cc). ``what`` names the kind of thing in the
    message, e.g. ``validate_name(n, "command sub-topic")``.
    """
    if not isinstance(name, str):
        raise TypeError(f"{what} name must be a str, got {type(name).__name__}: {name!r}")
    problem = _problem(name)
    if problem is not None:
        raise ValueError(f"invalid {what} name {name!r}: {problem}")
    return name


def validate_sub_topic(sub: str) -> str:
    """Validate a command sub-topic (the ``{sub}`` of ``{device}/{sub}/set``)."""
    return validate_name(sub, "command sub-topic")


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot be a topic prefix (e.g. ``"level 2 '' is empty"``), or None.

    The one rule for prefixes, shared by :func:`validate_prefix` (and so :class:`Topics`)
    and the settings check of ``mqtt.topic_prefix``. A prefix may span several levels
    (``home/gas``); each level follows the rules of :func:`validate_name`, so empty levels
    (``a//b``, a leading or trailing ``/``) are refused too. The first level must not start
    with ``$``: brokers reserve such topics for themselves (``$SYS/...``) and may refuse
    clients' messages there, and a subscription starting with a wildcard (``#``,
    ``+/status``) never matches them, so monitoring would not see the app.
    """
    for number, level in enumerate(prefix.split("/"), start=1):
        problem = _problem(level)
        if problem is None and number == 1 and level.startswith("$"):
            problem = "it starts with '$', which is reserved for broker topics such as $SYS"
        if problem is not None:
            return f"level {number} {level!r} {problem.removeprefix('it ')}"
    return None


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if usable as a topic prefix, else raise :class:`ValueError` saying
    why (see :func:`prefix_problem`)."""
    if not isinstance(prefix, str):
        raise TypeError(f"topic prefix must be a str, got {type(prefix).__name__}: {prefix!r}")
    problem = prefix_problem(prefix)
    if problem is not None:
        raise ValueError(f"invalid topic prefix {prefix!r}: {problem}")
    return prefix


def filter_matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest)."""
    wanted, levels = pattern.split("/"), topic.split("/")
    for i, part in enumerate(wanted):
        if part == "#":
            return True
        if i >= len(levels) or (part != "+" and part != levels[i]):
            return False
    return len(wanted) == len(levels)


class Topics:
    """Builds and parses the topics of one app under ``prefix`` (validated on creation).

    For a root device (``is_root=True``) the ``device`` argument is ignored and may be
    ``None``.
    """

    __slots__ = ("_prefix",)

    def __init__(self, prefix: str) -> None:
        validate_prefix(prefix)
        self._prefix = prefix

    @property
    def prefix(self) -> str:
        # Read-only (assigning raises AttributeError): it was validated once, in __init__.
        return self._prefix

    def __repr__(self) -> str:
        return f"Topics({self._prefix!r})"

    def _base(self, device: str | None, is_root: bool) -> str:
        if is_root:
            return self._prefix
        if device is None:
            raise ValueError("a device name is needed unless is_root=True")
        return f"{self._prefix}/{device}"

    def state(self, device: str | None, is_root: bool = False) -> str:
        """``{prefix}/{device}/state``; root: ``{prefix}/state``."""
        return f"{self._base(device, is_root)}/state"

    def set(self, device: str | None, is_root: bool = False) -> str:
        """``{prefix}/{device}/set``; root: ``{prefix}/set``."""
        return f"{self._base(device, is_root)}/set"

    def command(self, device: str | None, sub: str, is_root: bool = False) -> str:
        """``{prefix}/{device}/{sub}/set``; root: ``{prefix}/{sub}/set``."""
        return f"{self._base(device, is_root)}/{sub}/set"

    def availability(self, device: str | None, is_root: bool = False) -> str:
        """``{prefix}/{device}/availability``; root: ``{prefix}/availability``."""
        return f"{self._base(device, is_root)}/availability"

    def error(self, device: str | None = None, is_root: bool = False) -> str:
        """``{prefix}/{device}/error``; ``{prefix}/error`` for no device or the root."""
        if device is None or is_root:
            return f"{self._prefix}/error"
        return f"{self._prefix}/{device}/error"

    @property
    def status(self) -> str:
        """``{prefix}/status``: the app's heartbeat and last will."""
        return f"{self._prefix}/status"

    def channel(self, device: str | None, channel: str, is_root: bool = False) -> str:
        """``{prefix}/{device}/{channel}``; root: ``{prefix}/{channel}``."""
        return f"{self._base(device, is_root)}/{channel}"

    def _command_levels(self, topic: str) -> list[str] | None:
        """The levels between the prefix and ``set`` of a topic our command subscriptions
        (``{prefix}/set``, ``{prefix}/+/set``, ``{prefix}/+/+/set``) can deliver, or None."""
        head = f"{self._prefix}/"
        if not topic.startswith(head):
            return None
        levels = topic[len(head) :].split("/")
        if len(levels) > 3 or levels[-1] != "set":
            return None
        return levels[:-1]

    def command_topic_problem(self, topic: str) -> str | None:
        """Why a topic our command subscriptions deliver is still no command (an empty level
        matches ``+``; a broker may pass control characters), or None.

        None also for topics those subscriptions cannot deliver: they are not ours to judge.
        """
        for name in self._command_levels(topic) or ():
            problem = _problem(name)
            if problem is not None:
                return f"level {name!r} of the topic: {problem}"
        return None

    def parse_command(self, topic: str) -> tuple[str | None, str | None] | None:
        """Split an inbound command topic into ``(device, sub)``; ``None`` if it is not one.

        * ``{prefix}/set`` → ``(None, None)``: the root device's plain command.
        * ``{prefix}/{x}/set`` → ``(x, None)``. This is *ambiguous*: it is device ``x``'s
          plain command, or the root device's sub-topic ``x``. Only the registered names
          can tell, so the router decides (a registered device ``x`` wins, else the root's
          sub-topic ``x``).
        * ``{prefix}/{device}/{sub}/set`` → ``(device, sub)``.

        Anything else — another prefix, more levels, an empty level or a level that
        :func:`validate_name` refuses — gives ``None``: such a topic is no command of ours.
        """
        names = self._command_levels(topic)
        if names is None or any(_problem(name) is not None for name in names):
            return None
        if not names:
            return (None, None)
        if len(names) == 1:
            return (names[0], None)
        return (names[0], names[1])
