"""Routers: modules contributing devices to an App they do not own."""

from __future__ import annotations

import pytest

from agent import App, Entity, MemoryStore, Router, SaveOnChange
from agent.testing import AppHarness


def test_a_router_contributes_devices_adapters_and_hooks_with_its_prefix() -> None:
    router = Router("garden", prefix="garden-")
    hooks: list[str] = []

    class SoilPort:
        def moisture(self) -> float: ...

    class FakeSoil:
        def moisture(self) -> float:
            return 0.42

    router.adapter(SoilPort, FakeSoil)

    @router.telemetry("soil", interval=60, entities=[Entity("moisture", unit="%")])
    def soil(port: SoilPort) -> dict:
        return {"moisture": port.moisture()}

    @router.on_configure
    def configure() -> None:
        hooks.append("router hook")

    app = App("agent", heartbeat_interval=None)
    app.include_router(router)
    assert [reg.name for reg in app.registry] == ["garden-soil"]
    assert app.registry.get("garden-soil").entities == (Entity("moisture", unit="%"),)  # type: ignore[union-attr]
    with AppHarness(app) as h:
        h.assert_state("garden-soil", {"moisture": 0.42})
    assert hooks == ["router hook"]


def test_a_name_clash_names_both_sources() -> None:
    app = App("agent")

    @app.telemetry("pump", interval=1)
    def pump() -> dict:
        return {}

    router = Router("pool")

    @router.command("pump")
    def pool_pump(payload: str) -> None: ...

    with pytest.raises(ValueError) as info:
        app.include_router(router)
    message = str(info.value)
    assert "router 'pool'" in message and f"module {__name__}" in message
    assert "clashes with device 'pump'" in message


def test_store_rules_are_checked_when_included() -> None:
    router = Router("counters")
    router.add_telemetry("n", lambda: {}, interval=1, persist=SaveOnChange())
    with pytest.raises(ValueError, match="has no store"):
        App("agent").include_router(router)
    App("agent", store=MemoryStore()).include_router(router)


def test_an_adapter_port_registered_twice_is_refused() -> None:
    class Port: ...

    router = Router("r")
    router.adapter(Port, object)
    app = App("agent")
    app.adapter(Port, object)
    with pytest.raises(ValueError, match="adapter for Port"):
        app.include_router(router)


def test_entities_must_be_entities() -> None:
    with pytest.raises(ValueError, match=r"agent\.Entity"):
        App("a").add_telemetry("t", lambda: {}, interval=1, entities=["temperature"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="component"):
        Entity("x", component="light")
