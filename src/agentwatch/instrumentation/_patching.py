"""Installing wrappers lazily, and small value helpers every integration shares."""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap

from .. import _runtime
from ..hashing import text_too_deep


class DeferredPatch:
    """Wraps its targets when their module is imported, or at once if it already is.

    Importing ``mcp`` (or an agent framework) costs a second or more, so an
    application that never uses it must not pay for it in ``instrument()``;
    a library that is not installed at all makes this a silent no-op. Used by
    every framework integration (``openai_agents``, ``langchain``).
    """

    def __init__(self, targets: tuple[tuple[str, str, str, Any], ...]) -> None:
        self.targets = targets  # (module, class or "" for a module function, function, wrapt wrapper)
        self.installed = False
        self._wrapped: list[tuple[Any, str]] = []

    def install(self) -> None:
        if self.installed:
            return
        modules = [m for m in dict.fromkeys(t[0] for t in self.targets) if _installed(m.partition(".")[0])]
        if not modules:
            return
        self.installed = True
        for module in modules:
            wrapt.register_post_import_hook(self._on_import, module)

    def _on_import(self, module: Any) -> None:
        if not self.installed:  # uninstalled before the library was imported
            return
        for module_name, cls_name, method, wrapper in self.targets:
            if module_name != module.__name__:
                continue
            try:
                owner = getattr(module, cls_name) if cls_name else module
                if callable(getattr(owner, method, None)):
                    wrapt.wrap_function_wrapper(owner, method, wrapper)
                    self._wrapped.append((owner, method))
            except Exception as err:  # never break the user's import
                _runtime.internal_error(f"patch {module_name}.{cls_name}.{method}", err)

    def uninstall(self) -> None:
        for owner, method in reversed(self._wrapped):
            unwrap(owner, method)
        self._wrapped = []
        self.installed = False


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def text_value(text: str) -> Any:
    """A text block that is JSON counts as its value (hash ignores whitespace, entities see fields)."""
    stripped = text.strip()
    if stripped[:1] in ("{", "[") and not text_too_deep(stripped):  # too deep: kept as text (docs/limits.md)
        try:
            return json.loads(stripped)
        except (ValueError, RecursionError):
            pass
    return text
