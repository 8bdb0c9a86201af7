"""The gateway as a process: what it prints when it is serving, and how it stops."""

from __future__ import annotations

import re
import time

from conftest import start_gateway


def test_serving_line_names_a_free_loopback_port_and_the_emulator(gateway_bin, tmp_path):
    gw = start_gateway(gateway_bin, tmp_path)
    try:
        match = re.fullmatch(r"127\.0\.0\.1:(\d+)", gw.address)
        assert match, gw.serving
        assert int(match.group(1)) > 0
        assert gw.serving["emulator"] is True
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v4", gw.upstream), gw.serving
    finally:
        code = gw.stop()
    assert code == 0, gw.stderr_tail()
    assert gw.extra_stdout == [], "stdout must carry only the serving line; logs go to stderr"


def test_sigterm_stops_an_idle_gateway_promptly(gateway_bin, tmp_path):
    gw = start_gateway(gateway_bin, tmp_path)
    started = time.monotonic()
    code = gw.stop(timeout=10)
    assert code == 0, gw.stderr_tail()
    assert time.monotonic() - started < 10
