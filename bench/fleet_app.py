"""The agent of bench/fleet.py: bench/telemetry_app.py with a short heartbeat.

bench/fleet.py copies this file and telemetry_app.py next to the TOML file of each agent of
the fleet (``app = "fleet_app:app"``). Everything else — the devices, ``BENCH_DEVICES``,
``BENCH_INTERVAL``, the ready file ``BENCH_READY``, the result file — is telemetry_app's
(read its docstring); this module only changes how often the heartbeat goes out:

``BENCH_HEARTBEAT`` seconds between heartbeats (``{prefix}/status``), default 5

The heartbeat interval is an argument of ``App(...)`` and no setting of the TOML file or
the environment, and telemetry_app builds its App at import with one heartbeat an hour (its
measurements want none in the window). The runtime reads ``app.heartbeat_interval`` when it
starts, not when the App is built, so setting the attribute before ``python -m agent``
runs the app is enough; should that ever change, the fleet's heartbeat count shows it at
once (one heartbeat at start-up, then none).

The topic prefix and the client id of each agent are plain settings (``mqtt.topic_prefix``,
``mqtt.client_id``): bench/fleet.py writes them into each agent's TOML file.
"""

from __future__ import annotations

import os

from telemetry_app import app

app.heartbeat_interval = float(os.environ.get("BENCH_HEARTBEAT", "5"))

__all__ = ["app"]
