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
        gw.stop()
    assert gw.extra_stdout == [], "stdout must carry only the serving line; logs go to stderr"


def test_sigterm_right_after_the_serving_line_drains_and_exits_cleanly(gateway_bin, tmp_path):
    # A supervisor may stop the gateway as soon as it announces itself: the SIGTERM handler
    # must be in place by then, or the process dies of the signal instead of draining.
    gw = start_gateway(gateway_bin, tmp_path)
    started = time.monotonic()
    code = gw.stop(timeout=10)
    assert code == 0, gw.stderr_tail()
    assert time.monotonic() - started < 10
