"""``agentwatch-collector --config FILE`` (also ``python -m agentwatch.collector``).

Exit codes: 0 after a clean drain (SIGTERM/SIGINT), 2 for an invalid
configuration or command line, 1 when a port cannot be bound.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from ..errors import ConfigError
from ..version import __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="agentwatch-collector",
        description="Receive OTLP traces, flag agent anomalies over whole traces, forward every span.",
    )
    parser.add_argument("--config", "-c", required=True, metavar="FILE", help="collector YAML configuration")
    parser.add_argument("--version", action="version", version=f"agentwatch-collector {__version__}")
    args = parser.parse_args(argv)

    from .config import load_collector_config

    try:
        config = load_collector_config(args.config)
    except ConfigError as exc:
        print(f"agentwatch-collector: {exc}", file=sys.stderr)
        return 2

    logging.basicConfig(
        level=config.telemetry.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from .app import Collector

    collector = Collector(config)
    try:
        collector.start()
    except OSError as exc:
        # the message names the endpoint and which receiver; no traceback for an operator error
        print(f"agentwatch-collector: {exc.strerror or exc}", file=sys.stderr)
        return 1

    # Everything alive after start-up (modules, config, the engine) lives as long as the
    # process: keep the cyclic GC from rescanning it, and collect young objects less often
    # (spans are bytes; per-trace garbage is freed by reference counting).
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger("agentwatch.collector").info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.wait(0.5):
        pass
    collector.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
