"""An application server posting notifications at a steady rate, for load tests.

Usage: ``python poster.py PORT COUNT RATE CONNECTIONS KEY PAD``. Posts COUNT
notifications ``{"subscribers": [KEY], "n": 0..COUNT-1, "pad": "x" * PAD}`` to the
admin port at up to RATE per second over CONNECTIONS keep-alive connections
(one thread each), then prints a JSON report: how many got 200, and the rate.
Runs in its own process so that the test's event loop is not the bottleneck.
"""

from __future__ import annotations

import http.client
import itertools
import json
import sys
import threading
import time

import orjson


def main() -> None:
    port, count, rate = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    connections, key, pad = int(sys.argv[4]), sys.argv[5], "x" * int(sys.argv[6])
    numbers = itertools.count()
    lock = threading.Lock()
    ok = [0]
    started = time.monotonic()

    def post_some() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while True:
            with lock:
                n = next(numbers)
            if n >= count:
                break
            ahead = started + n / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing the load
            body = orjson.dumps(
                {"key": key, "type": "load", "subscribers": [key], "n": n, "pad": pad}
            )
            connection.request("POST", "/", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                with lock:
                    ok[0] += 1
        connection.close()

    threads = [threading.Thread(target=post_some) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    print(json.dumps({"ok": ok[0], "rate": count / elapsed}), flush=True)


if __name__ == "__main__":
    main()
