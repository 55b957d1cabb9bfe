"""The one switch the request choke point and the tool wrappers read: the active replay, or None.

Kept apart from :mod:`.replay` so the hot paths import a module with one global and nothing else.
"""

from __future__ import annotations

from typing import Any

ACTIVE: Any = None
