"""A stdlib HTTP server run in a daemon thread: started, stopped and joined the same way everywhere."""

from __future__ import annotations

import socketserver
import threading


class ServerThread:
    """Serves ``server`` in a named daemon thread; :meth:`stop` shuts it down and joins."""

    def __init__(self, server: socketserver.BaseServer, name: str) -> None:
        self.server = server
        self.name = name
        address = server.server_address
        self.port: int = int(address[1]) if isinstance(address, tuple) else 0  # the bound port (0 asked → real)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, name=self.name, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
