"""Settings: typed classes with defaults, loaded from TOML, a ``.env`` file and the environment.

A settings class is a plain class whose annotated attributes are its fields::

    class MySettings(Settings):
        env_prefix = "MYAPP_"
        poll_interval: Annotated[float, greater_than(0)] = 30.0
        sensors: list[str] = []

``MySettings.load(config_file="/etc/myapp.toml")`` then layers four sources, each one
overriding the previous: the class defaults, the TOML file, the ``.env`` file and the
environment (``MYAPP_POLL_INTERVAL=10``, ``MYAPP_MQTT__HOST=broker``: ``__`` walks into a
section). ``MySettings()`` gives the defaults alone, and keyword arguments
(``MqttSettings(port=1884)``) are checked with the same rules as a TOML file.

There is no pydantic here on purpose (Debian 12 ships only pydantic 1, see
docs/adr/002-settings-without-pydantic.md): the validator understands just the types a
configuration needs. Every problem becomes a :class:`ConfigError` whose ``str()`` is one line
naming the source, the key, what was expected and what was found; nothing else escapes
``load()``, whatever the files hold. What deserves a warning but not a refusal (a password
in a file other users can read) is kept in ``settings.load_warnings()``, which ``App.run``
logs.

Import from here, not from the modules, which are laid out so that each one imports only
those above it:

- ``errors``: :class:`ConfigError`.
- ``fields``: field metadata: :class:`Check`, :func:`between`, :func:`at_least`,
  :func:`greater_than`, :data:`SECRET`, :data:`SECRET_FILE`, and how a class's annotations
  become fields.
- ``conversion``: raw source values to typed field values, and the error wording.
- ``section``: the :class:`Section` base class.
- ``sources``: reading TOML (:func:`read_toml`), ``.env`` files and the environment.
- ``model``: :class:`MqttSettings`, :class:`LoggingSettings` and :class:`Settings` with
  its ``load()``.
- ``client_id``: :func:`default_client_id`.
"""

from __future__ import annotations

from agent.settings.client_id import default_client_id
from agent.settings.errors import ConfigError
from agent.settings.fields import SECRET, SECRET_FILE, Check, at_least, between, greater_than
from agent.settings.model import LoggingSettings, MqttSettings, Settings
from agent.settings.section import Section
from agent.settings.sources import _parse_dotenv as _parse_dotenv  # tests use it
from agent.settings.sources import read_toml

__all__ = [
    "SECRET",
    "SECRET_FILE",
    "Check",
    "ConfigError",
    "LoggingSettings",
    "MqttSettings",
    "Section",
    "Settings",
    "at_least",
    "between",
    "default_client_id",
    "greater_than",
    "read_toml",
]
