"""The baseline of bench/bridge.py: the bridge's job in a minimal hand-written paho script.

What someone would write without the framework, and the physical limit of this stack: one
paho client with its network thread (``loop_start``), a last will of ``offline`` on
``{prefix}/status``, one plain thread per telemetry device looping on monotonic deadlines,
and commands answered right in paho's ``on_message`` callback (no hand-off to another
thread — which agent, by design, makes: user code never runs on paho's thread). A burst
runs on a thread of its own, as a device's would. Same topics, payloads, QoS and retain
flags as bench/bridge_app.py; on SIGTERM it publishes ``offline`` (retained, QoS 1), waits
for the broker's acknowledgement, disconnects and exits. Works with paho-mqtt 1.6 and 2.x.

    python bridge_baseline.py --host H --port P --prefix X [--devices 10]
"""

from __future__ import annotations

import argparse
import json
import queue
import signal
import socket
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt


def new_client(client_id: str) -> Any:
    """paho 1.6 or 2.x, with Nagle's algorithm off as agent has it (a well-written script
    would; else a small QoS 1 exchange waits ~40 ms on a delayed ACK)."""
    if hasattr(mqtt, "CallbackAPIVersion"):  # paho 2.x
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    else:
        client = mqtt.Client(client_id=client_id)
    client.on_socket_open = lambda client, userdata, sock: sock.setsockopt(
        socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
    )
    return client


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--prefix", default="benchbare")
    parser.add_argument("--devices", type=int, default=10)
    args = parser.parse_args()
    prefix = args.prefix
    stop = threading.Event()
    bursts: queue.Queue[tuple[int, int] | None] = queue.Queue()

    client = new_client(prefix)
    client.will_set(f"{prefix}/status", "offline", qos=1, retain=True)

    def on_connect(client: Any, userdata: Any, *rest: Any) -> None:
        client.subscribe(f"{prefix}/echo/set", 1)
        client.publish(f"{prefix}/status", "online", qos=1, retain=True)

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        words = msg.payload.decode().split()
        if words[0] == "burst":
            bursts.put((int(words[1]), int(words[2])))
        elif words[1] == "0":
            client.publish(f"{prefix}/echo/reply", msg.payload, qos=0)
        else:
            state = json.dumps({"seq": int(words[0])})
            client.publish(f"{prefix}/echo/state", state, qos=1, retain=True)

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(args.host, args.port, keepalive=60)
    client.loop_start()

    def device(index: int) -> None:
        topic, count, deadline = f"{prefix}/t{index}/state", 0, time.monotonic()
        while not stop.is_set():
            count += 1
            client.publish(topic, json.dumps({"v": count}), qos=1, retain=True)
            deadline += 1.0
            stop.wait(max(0.0, deadline - time.monotonic()))

    def burster() -> None:
        while (job := bursts.get()) is not None:
            count, qos = job
            for i in range(count):
                client.publish(f"{prefix}/echo/burst", str(i), qos=qos)

    threads = [
        threading.Thread(target=device, args=(i,), name=f"t{i}") for i in range(args.devices)
    ]
    threads.append(threading.Thread(target=burster, name="burst"))
    for thread in threads:
        thread.start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    bursts.put(None)
    for thread in threads:
        thread.join()
    client.publish(f"{prefix}/status", "offline", qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
