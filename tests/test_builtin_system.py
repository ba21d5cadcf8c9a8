"""The ``system`` built-in against fake /proc and /sys trees: every option's mistakes, what a
Pi, a PC and a container publish, and the device through the testing kit and a config file."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import builtin_helpers as helpers
import pytest

from agent import App, Router
from agent.daemon.app import build_app
from agent.daemon.builtins import BUILTINS
from agent.daemon.builtins.system import (
    SYSTEM,
    SystemOptions,
    entities,
    make_handler,
    thermal_zone_file,
)
from agent.daemon.config import check_config
from agent.daemon.types import DeviceSpec
from agent.testing import AppHarness

MEMINFO = """\
MemTotal:        4000000 kB
MemFree:          500000 kB
MemAvailable:    3000000 kB
Buffers:          100000 kB
Cached:          1000000 kB
SwapTotal:        200000 kB
SwapFree:         150000 kB
"""


def put(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def fake_proc(root: Path) -> Path:
    proc = root / "proc"
    put(proc, "loadavg", "0.52 0.584 1.5 1/467 12345\n")
    put(proc, "meminfo", MEMINFO)
    put(proc, "uptime", "350735.47 234388.90\n")
    return proc


def fake_pi_sys(root: Path, throttled: str = "50005") -> Path:
    sys_root = root / "sys"
    put(sys_root, "class/thermal/thermal_zone0/type", "cpu-thermal\n")
    put(sys_root, "class/thermal/thermal_zone0/temp", "47236\n")
    put(sys_root, "class/net/eth0/statistics/rx_bytes", "123456789\n")
    put(sys_root, "class/net/eth0/statistics/tx_bytes", "2345678\n")
    put(sys_root, "devices/platform/soc/soc:firmware/get_throttled", f"{throttled}\n")
    return sys_root


def options(tmp_path: Path, **table: Any) -> SystemOptions:
    """A checked table (failing the test on any problem) with the fake roots."""
    table.setdefault("sysfs_root", str(tmp_path / "sys"))
    table.setdefault("procfs_root", str(tmp_path / "proc"))
    return helpers.checked(SYSTEM, table)


def problems_of(table: dict[str, Any]) -> list[tuple[str, str, str]]:
    return helpers.problems_of(SYSTEM, table)


# -- check ------------------------------------------------------------------------------


def test_the_defaults_read_the_real_host() -> None:
    assert problems_of({}) == []
    checked = SYSTEM.check({}, lambda *p: None)
    assert checked == SystemOptions()
    assert checked.mounts == (("/", "root"),) and checked.interfaces == ()
    assert (checked.sysfs_root, checked.procfs_root, checked.thermal_zone) == (
        "/sys",
        "/proc",
        "auto",
    )
    assert BUILTINS["system"] is SYSTEM and SYSTEM.default_interval == 60.0


def test_mounts_and_interfaces_get_field_slugs() -> None:
    checked = SYSTEM.check(
        {"mounts": ["/", "/boot/firmware"], "interfaces": ["eth0", "br-lan"]}, lambda *p: None
    )
    assert checked.mounts == (("/", "root"), ("/boot/firmware", "boot_firmware"))
    assert checked.interfaces == (("eth0", "eth0"), ("br-lan", "br_lan"))


@pytest.mark.parametrize(
    ("table", "key", "expected", "found"),
    [
        ({"mount": ["/"]}, "mount", 'did you mean "mounts"?', "an unknown key"),
        ({"colour": "red"}, "colour", "an option of system: mounts, interfaces", ""),
        ({"mounts": "/"}, "mounts", "a list of mount points", '"/"'),
        ({"mounts": ["/", "data"]}, "mounts[2]", "an absolute path", '"data"'),
        ({"mounts": ["/", 3]}, "mounts[2]", "an absolute path", "3"),
        ({"mounts": ["/", "/"]}, "mounts[2]", 'a name of its own: "/" already', '"/"'),
        ({"mounts": ["/a-b", "/a_b"]}, "mounts[2]", "disk_a_b_*", '"/a_b"'),
        ({"mounts": ["/", "/---"]}, "mounts[2]", "a name with a letter or digit", '"/---"'),
        ({"interfaces": "eth0"}, "interfaces", "a list of network interfaces", '"eth0"'),
        ({"interfaces": ["eth0", "a/b"]}, "interfaces[2]", "an interface name", '"a/b"'),
        ({"interfaces": ["x" * 16]}, "interfaces[1]", "1-15 characters", "x" * 16),
        ({"interfaces": ["eth 0"]}, "interfaces[1]", "an interface name", '"eth 0"'),
        ({"interfaces": [".."]}, "interfaces[1]", "an interface name", '".."'),
        ({"interfaces": ["br-lan", "br_lan"]}, "interfaces[2]", "net_br_lan_*", '"br_lan"'),
        ({"thermal_zone": 0}, "thermal_zone", '"auto", a zone ("thermal_zone0")', "0"),
        ({"thermal_zone": "../x"}, "thermal_zone", "or a zone type", '"../x"'),
        ({"thermal_zone": ".."}, "thermal_zone", "or a zone type", '".."'),
        ({"sysfs_root": "sys"}, "sysfs_root", "an absolute path (starting with /)", '"sys"'),
        ({"procfs_root": False}, "procfs_root", "an absolute path", "false"),
    ],
)
def test_each_mistake_is_reported_with_its_key(
    table: dict[str, Any], key: str, expected: str, found: str
) -> None:
    ((where, wanted, shown),) = problems_of(table)
    assert where == key and expected in wanted and found in shown


def test_every_mistake_of_a_table_is_reported_at_once() -> None:
    problems = problems_of(
        {"mounts": ["rel", "/"], "interfaces": 5, "thermal_zone": [], "sysfs_roots": "/x"}
    )
    assert [p[0] for p in problems] == ["sysfs_roots", "mounts[1]", "interfaces", "thermal_zone"]


# -- reading ------------------------------------------------------------------------------


def test_a_pi_publishes_every_part(tmp_path: Path) -> None:
    fake_proc(tmp_path)
    fake_pi_sys(tmp_path)
    read = make_handler(options(tmp_path, mounts=["/", str(tmp_path)], interfaces=["eth0"]))
    state = read()
    disk = {k: state.pop(k) for k in list(state) if k.startswith("disk_")}
    assert state == {
        "cpu_temperature": 47.2,
        "load_1": 0.52,
        "load_5": 0.58,
        "load_15": 1.5,
        "memory_used_percent": 25.0,
        "swap_used_percent": 25.0,
        "uptime_s": 350735,
        "net_eth0_rx_bytes": 123456789,
        "net_eth0_tx_bytes": 2345678,
        # 0x50005: under-voltage now and since boot, throttled now and since boot
        "under_voltage": "ON",
        "freq_capped": "OFF",
        "throttled": "ON",
        "soft_temp_limit": "OFF",
        "under_voltage_occurred": "ON",
        "freq_capped_occurred": "OFF",
        "throttled_occurred": "ON",
        "soft_temp_limit_occurred": "OFF",
    }
    slug = "_".join(part for part in str(tmp_path).split("/") if part).replace("-", "_")
    assert set(disk) == {"disk_root_used_percent", f"disk_{slug}_used_percent"}
    assert all(0.0 <= value <= 100.0 for value in disk.values())


@pytest.mark.parametrize(
    ("text", "on"),
    [
        ("0", set()),
        ("0x0", set()),
        ("80008", {"soft_temp_limit", "soft_temp_limit_occurred"}),
        ("20002", {"freq_capped", "freq_capped_occurred"}),
        ("0x50000", {"under_voltage_occurred", "throttled_occurred"}),
    ],
)
def test_the_throttling_bits_are_decoded(tmp_path: Path, text: str, on: set[str]) -> None:
    fake_proc(tmp_path)
    fake_pi_sys(tmp_path, throttled=text)
    state = make_handler(options(tmp_path))()
    flags = {k: v for k, v in state.items() if v in ("ON", "OFF")}
    assert len(flags) == 8 and {k for k, v in flags.items() if v == "ON"} == on


def test_a_pi_5_firmware_node_elsewhere_is_found(tmp_path: Path) -> None:
    fake_proc(tmp_path)
    put(tmp_path, "sys/devices/platform/axi/axi:firmware/get_throttled", "1\n")
    state = make_handler(options(tmp_path))()
    assert state["under_voltage"] == "ON" and state["throttled"] == "OFF"


def test_without_get_throttled_the_rpi_volt_hwmon_gives_under_voltage_alone(
    tmp_path: Path,
) -> None:
    fake_proc(tmp_path)
    put(tmp_path, "sys/class/hwmon/hwmon0/name", "cpu_thermal\n")
    put(tmp_path, "sys/class/hwmon/hwmon1/name", "rpi_volt\n")
    alarm = put(tmp_path, "sys/class/hwmon/hwmon1/in0_lcrit_alarm", "1\n")
    read = make_handler(options(tmp_path))
    assert read()["under_voltage"] == "ON" and "throttled" not in read()
    alarm.write_text("0\n")
    assert read()["under_voltage"] == "OFF"


def test_a_container_without_sys_publishes_what_proc_has(tmp_path: Path) -> None:
    fake_proc(tmp_path)
    (tmp_path / "proc" / "meminfo").write_text(
        "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 350 kB\n"
    )
    state = make_handler(options(tmp_path, mounts=[]))()
    # No MemAvailable (an old kernel): free + buffers + cache; no swap at all: 0 %.
    assert state == {
        "load_1": 0.52,
        "load_5": 0.58,
        "load_15": 1.5,
        "memory_used_percent": 50.0,
        "swap_used_percent": 0.0,
        "uptime_s": 350735,
    }


def test_unreadable_parts_are_left_out(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path)
    sys_root = fake_pi_sys(tmp_path)
    (proc / "loadavg").write_text("garbage\n")
    (proc / "uptime").write_text("")
    (sys_root / "class/thermal/thermal_zone0/temp").write_text("-61\x00")
    (sys_root / "devices/platform/soc/soc:firmware/get_throttled").write_text("zz\n")
    state = make_handler(options(tmp_path, mounts=[], interfaces=["eth0"]))()
    assert state == {
        "memory_used_percent": 25.0,
        "swap_used_percent": 25.0,
        "net_eth0_rx_bytes": 123456789,
        "net_eth0_tx_bytes": 2345678,
    }


def test_a_configured_part_that_vanishes_is_logged_once_and_once_when_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_proc(tmp_path)
    sys_root = fake_pi_sys(tmp_path)
    stats = sys_root / "class/net/eth0"
    read = make_handler(
        options(tmp_path, mounts=["/", str(tmp_path / "not-there")], interfaces=["eth0"])
    )
    caplog.set_level(logging.INFO, logger="agent.daemon.system")
    for _ in range(3):
        state = read()
    assert "net_eth0_rx_bytes" in state and "disk_root_used_percent" in state
    assert not any(k.endswith("not_there_used_percent") for k in state)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        f"mount {tmp_path / 'not-there'} cannot be read, its fields are left out"
    ]
    caplog.clear()
    stats.rename(sys_root / "class/net/gone")  # the USB adapter is unplugged
    assert "net_eth0_rx_bytes" not in read() and "net_eth0_rx_bytes" not in read()
    (sys_root / "class/net/gone").rename(stats)
    assert read()["net_eth0_tx_bytes"] == 2345678
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records] == [
        ("WARNING", "interface eth0 cannot be read, its fields are left out"),
        ("INFO", "interface eth0 can be read again"),
    ]


def test_nothing_readable_at_all_is_an_oserror(tmp_path: Path) -> None:
    read = make_handler(options(tmp_path, mounts=[str(tmp_path / "nope")]))
    with pytest.raises(OSError, match="nothing could be read: ") as info:
        read()
    assert "loadavg" in str(info.value) and "nope" in str(info.value)


def test_auto_prefers_the_cpu_zone_and_a_zone_can_be_named(tmp_path: Path) -> None:
    for number, kind, milli in (
        (0, "acpitz", 27800),
        (1, "iwlwifi_1", 41000),
        (2, "x86_pkg_temp", 55500),
    ):
        put(tmp_path, f"sys/class/thermal/thermal_zone{number}/type", f"{kind}\n")
        put(tmp_path, f"sys/class/thermal/thermal_zone{number}/temp", f"{milli}\n")
    fake_proc(tmp_path)

    def temperature(zone: str) -> float:
        return make_handler(options(tmp_path, thermal_zone=zone))()["cpu_temperature"]

    assert temperature("auto") == 55.5
    assert temperature("thermal_zone0") == 27.8
    assert temperature("iwlwifi_1") == 41.0  # by type
    assert thermal_zone_file(options(tmp_path, thermal_zone="gpu")) is None
    assert "cpu_temperature" not in make_handler(options(tmp_path, thermal_zone="gpu"))()


def test_without_a_cpu_type_auto_takes_the_lowest_numbered_zone(tmp_path: Path) -> None:
    for number in (10, 2):
        put(tmp_path, f"sys/class/thermal/thermal_zone{number}/type", "board\n")
        put(tmp_path, f"sys/class/thermal/thermal_zone{number}/temp", f"{number}000\n")
    assert thermal_zone_file(options(tmp_path)) == str(
        tmp_path / "sys/class/thermal/thermal_zone2/temp"
    )


# -- Home Assistant entities --------------------------------------------------------------


def test_entities_of_a_pi(tmp_path: Path) -> None:
    fake_pi_sys(tmp_path)
    found = {e.field: e for e in entities(options(tmp_path, interfaces=["eth0"]))}
    temperature = found.pop("cpu_temperature")
    assert (temperature.unit, temperature.device_class, temperature.state_class) == (
        "°C",
        "temperature",
        "measurement",
    )
    for field in ("memory_used_percent", "swap_used_percent", "disk_root_used_percent"):
        entity = found.pop(field)
        assert (entity.unit, entity.device_class, entity.state_class) == (
            "%",
            None,
            "measurement",
        )
    for field in ("load_1", "load_5", "load_15"):
        assert found.pop(field).state_class == "measurement"
    uptime = found.pop("uptime_s")
    assert (uptime.unit, uptime.device_class, uptime.state_class) == (
        "s",
        "duration",
        "total_increasing",
    )
    for field in ("net_eth0_rx_bytes", "net_eth0_tx_bytes"):
        entity = found.pop(field)
        assert (entity.unit, entity.device_class, entity.state_class) == (
            "B",
            "data_size",
            "total_increasing",
        )
    assert len(found) == 8  # the throttling flags
    for entity in found.values():
        assert entity.component == "binary_sensor" and entity.device_class == "problem"
        assert (entity.payload_on, entity.payload_off) == ("ON", "OFF")
    assert found["under_voltage_occurred"].name == "Under-voltage since boot"


def test_a_pc_gets_no_pi_flags_and_a_container_no_temperature(tmp_path: Path) -> None:
    put(tmp_path, "sys/class/thermal/thermal_zone0/temp", "40000\n")
    fields = {e.field for e in entities(options(tmp_path))}
    assert "cpu_temperature" in fields and "under_voltage" not in fields
    bare = {e.field for e in entities(options(tmp_path / "empty"))}
    assert "cpu_temperature" not in bare and "memory_used_percent" in bare


# -- the device ---------------------------------------------------------------------------


def start(tmp_path: Path, *, raise_errors: bool = True, **table: Any) -> AppHarness:
    router = Router("built-ins")
    spec = DeviceSpec(key="device[1]", type="system", name="host", interval=60.0)
    SYSTEM.register(router, spec, options(tmp_path, **table))
    app = App("agent", heartbeat_interval=None)
    app.include_router(router)
    return AppHarness(app, raise_errors=raise_errors).start()


def test_the_device_publishes_every_interval_and_goes_offline_when_nothing_reads(
    tmp_path: Path,
) -> None:
    proc = fake_proc(tmp_path)
    fake_pi_sys(tmp_path)
    h = start(tmp_path, raise_errors=False, mounts=[])
    try:
        h.assert_state("host", {"cpu_temperature": 47.2, "uptime_s": 350735})
        h.assert_published("agent/host/availability", "online", retain=True)
        (proc / "uptime").write_text("350795.5 0\n")
        h.advance(59.999)
        h.assert_state("host", {"uptime_s": 350735})
        h.advance(0.001)
        h.assert_state("host", {"uptime_s": 350795})
        # procfs and sysfs both gone (a broken chroot): the one case that is an error
        proc.rename(tmp_path / "proc-gone")
        (tmp_path / "sys").rename(tmp_path / "sys-gone")
        h.advance(60)
        error = h.assert_published("agent/host/error").json()
        assert error["message"].startswith("nothing could be read: ")
        h.assert_published("agent/host/availability", "offline", retain=True)
        (tmp_path / "proc-gone").rename(proc)
        h.advance(60)
        h.assert_published("agent/host/availability", "online", retain=True)
        assert len(h.messages_for("agent/host/error")) == 1
    finally:
        h.stop()


def test_a_config_file_with_system_devices_checks_builds_and_runs(tmp_path: Path) -> None:
    fake_proc(tmp_path)
    fake_pi_sys(tmp_path)
    config = tmp_path / "agent.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [store]
            backend = "memory"

            [[device]]
            type = "system"
            name = "pi"
            interval = 30
            mounts = ["/", "{tmp_path}"]
            interfaces = ["eth0"]
            sysfs_root = "{tmp_path}/sys"
            procfs_root = "{tmp_path}/proc"
            publish = {{ on_change = 1, every = 600 }}
            filter = {{ cpu_temperature = {{ median = 3 }} }}

            [[device]]
            type = "system"
            name = "plain"
            enabled = false
            """
        )
    )
    checked, problems = check_config(config, env_file=None, environ={})
    assert problems == [] and checked is not None
    pi, plain = checked.devices
    assert pi.spec.interval == 30.0 and plain.spec.interval == 60.0
    assert pi.options.interfaces == (("eth0", "eth0"),)
    app = build_app(checked)
    assert [r.name for r in app.registry] == ["pi", "plain"]
    temp = tmp_path / "sys/class/thermal/thermal_zone0/temp"
    with AppHarness(app) as h:
        h.assert_state("pi", {"cpu_temperature": 47.2, "net_eth0_rx_bytes": 123456789})
        assert h.last_state("plain") is None
        temp.write_text("90000\n")  # one spike: the median of 47.2, 90 is 68.6
        h.advance(30)
        h.assert_state("pi", {"cpu_temperature": 68.6})
        temp.write_text("47300\n")  # the median of 47.2, 90, 47.3: the spike is gone
        h.advance(30)
        h.assert_state("pi", {"cpu_temperature": 47.3})
        h.advance(30)  # nothing moved by 1 or more: on_change publishes nothing
        assert len(h.messages_for("agent/pi/state")) == 3


def test_a_config_file_reports_the_system_table_mistakes(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[[device]]\ntype = "system"\nmount = ["/"]\ninterfaces = ["a/b"]\n')
    checked, problems = check_config(config, env_file=None, environ={})
    assert checked is None
    lines = [str(p) for p in problems]
    assert len(lines) == 2, lines
    assert 'device[1].mount: expected an option of system (did you mean "mounts"?)' in lines[0]
    assert "device[1].interfaces[1]: expected an interface name" in lines[1]


def test_a_pi_config_is_checked_on_a_host_without_its_parts(tmp_path: Path) -> None:
    """A filter on the CPU temperature or a dead-band on a throttling flag is fine on a host
    that has neither (the config is for the Pi); a typo in a field name is not."""
    (tmp_path / "proc").mkdir()
    (tmp_path / "sys").mkdir()
    config = tmp_path / "agent.toml"
    table = (
        '[[device]]\ntype = "system"\n'
        f'sysfs_root = "{tmp_path}/sys"\nprocfs_root = "{tmp_path}/proc"\n'
    )
    config.write_text(
        table + "filter = { cpu_temperature = { median = 3 } }\n"
        "publish = { on_change = { under_voltage = 0, load_1 = 0.5 } }\n"
    )
    checked, problems = check_config(config, env_file=None, environ={})
    assert problems == [] and checked is not None
    build_app(checked)
    config.write_text(table + "filter = { cpu_temprature = { median = 3 } }\n")
    checked, problems = check_config(config, env_file=None, environ={})
    assert checked is not None
    found: list[Any] = []
    build_app(checked, problems=found)
    assert [str(p).split(": ", 1)[1] for p in found] == [
        "device[1].filter.cpu_temprature: not a field of this system device (did you mean "
        '"cpu_temperature"?); its fields are ' + found[0].detail.split("its fields are ")[1]
    ]
