"""Argument checks shared by the networks, so that a bad config is reported before anything is built.

A network class derives from :class:`CheckedNet` and gives a static ``argument_errors(..., prefix)``
taking its constructor's arguments. The constructor raises on its messages with
:meth:`CheckedNet.check_arguments`; :meth:`CheckedNet.config_errors` runs the same checks on a Hydra node,
for :mod:`genbench.validate`, with the constructor's defaults for the keys the node leaves out.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from genbench.checks import is_int


def levels_errors(prefix: str, ch_mult: Any, image_size: Any, halvings: int | None = None, name: str = "the network") -> list[str]:
    """``ch_mult`` a non-empty list of integers >= 1, and ``image_size`` halved ``halvings`` times
    (default: once per level) without a remainder."""
    if not isinstance(ch_mult, Sequence) or isinstance(ch_mult, str) or not ch_mult or not all(is_int(m, 1) for m in ch_mult):
        return [f"{prefix}ch_mult={ch_mult!r}: must be a non-empty list of integers >= 1"]
    n = len(ch_mult) if halvings is None else halvings
    if is_int(image_size, 1) and image_size % 2**n:
        return [f"{prefix}image_size={image_size}: {name} halves it {n} times (len(ch_mult)={len(ch_mult)}), "
                f"so it must be divisible by {2**n}; use fewer levels in ch_mult or another image size"]  # fmt: skip
    return []


class CheckedNet:
    """Mixin: ``config_errors(node, prefix)`` from the class's ``argument_errors``."""

    @staticmethod
    def argument_errors(prefix: str = "") -> list[str]:  # overridden: the constructor's arguments, then prefix
        return []

    def check_arguments(self, *args: Any) -> None:
        """Raise ``ValueError`` naming the class and every problem ``argument_errors(*args)`` finds."""
        errors = self.argument_errors(*args)
        if errors:
            raise ValueError(f"{type(self).__name__}: " + "; ".join(errors))

    @classmethod
    def config_errors(cls, node: Any, prefix: str = "model.net.") -> list[str]:
        """Checks of a Hydra node targeting this class, before anything is built.

        A value interpolated from elsewhere (``${model.latent_dim}``, ``${data.shape.0}``) is checked
        where it is set, so its own range message is left out here (one bad value, one message); the
        checks that combine it with this node's values (an image size the levels cannot halve) stay.
        """
        from omegaconf import DictConfig, OmegaConf

        defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items() if p.default is not p.empty}
        takes = [k for k in inspect.signature(cls.argument_errors).parameters if k != "prefix"]
        missing = [k for k in takes if k not in node and k not in defaults]
        if missing:
            return [f"{prefix}{k}: missing, a required argument of {cls.__name__}" for k in missing]
        args, echoes = {}, []
        for key in takes:
            v = node[key] if key in node else defaults[key]
            args[key] = list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
            if isinstance(node, DictConfig) and key in node and OmegaConf.is_interpolation(node, key):
                echoes.append(f"{prefix}{key}={args[key]!r}: must be")
        return [e for e in cls.argument_errors(**args, prefix=prefix) if not e.startswith(tuple(echoes))]
