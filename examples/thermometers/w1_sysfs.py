"""The real 1-wire bus: the kernel's w1 driver in sysfs (``dtoverlay=w1-gpio``).

Never imported by ``--dry-run``, the tests or ``agent describe``: the bridge names it as the
lazy adapter ``"w1_sysfs:SysfsThermometers"``.
"""

from __future__ import annotations

from pathlib import Path

DEVICES = Path("/sys/bus/w1/devices")


class SysfsThermometers:
    """Reads ``/sys/bus/w1/devices/<id>/w1_slave``: each read starts a conversion (750 ms at
    12 bits) and returns the kernel's two lines with the CRC verdict and ``t=``."""

    def read(self, sensor_id: str) -> str:
        return (DEVICES / sensor_id / "w1_slave").read_text(encoding="ascii")
