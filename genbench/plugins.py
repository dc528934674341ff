"""Plug-ins: modules that register families, metrics or feature spaces before a command runs.

Every ``genbench-*`` command imports, before it reads its configuration, the modules named in the
``GENBENCH_PLUGINS`` environment variable (comma-separated import paths, e.g.
``GENBENCH_PLUGINS=my_lab.flows,my_lab.metrics``) and those of installed packages that declare the
entry-point group ``genbench.plugins``. A plug-in module calls ``register_family``,
``register_metric`` or ``register_feature_space`` at import; nothing else in genbench is edited.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from genbench.errors import GenbenchError

ENV = "GENBENCH_PLUGINS"
ENTRY_POINT_GROUP = "genbench.plugins"
_loaded: set[str] = set()


def plugin_modules() -> list[str]:
    """The plug-in modules to import: ``GENBENCH_PLUGINS``, then installed entry points."""
    names = [n.strip() for n in os.environ.get(ENV, "").split(",") if n.strip()]
    names += [ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)]
    return list(dict.fromkeys(names))


def load_plugins() -> list[str]:
    """Import every plug-in module once; returns their names. One clear error for one that cannot be imported."""
    names = plugin_modules()
    for name in names:
        if name in _loaded:
            continue
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise GenbenchError(f"{ENV}={os.environ.get(ENV, '')!r}: cannot import plug-in {name!r} ({e})") from None
        _loaded.add(name)
    return names
