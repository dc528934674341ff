"""The family registry: the one place that lists genbench's families.

A family is one :class:`FamilySpec` and one :func:`register_family` call. The lecture, compare, the
report and its figures, the benchmarks and the tests read their lists, names, colours and order
from here, so a new family (built in, or a plug-in loaded with ``GENBENCH_PLUGINS``) is its own
files plus one registration.

Specs name their classes by import path, so reading the registry (``genbench-compare`` ordering
its table, say) imports neither Lightning nor the networks.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from genbench.errors import GenbenchError


@dataclass(frozen=True)
class FigureRows:
    """A report figure a family offers: rows of images (label, ``[k, C, H, W]``) under a heading."""

    key: str
    heading: str
    caption: str
    rows: list[tuple[str, Any]]


@dataclass(frozen=True)
class FamilySpec:
    """Everything genbench needs to know about a family, besides its code.

    Args:
        name: the ``model=NAME`` config option, the ``family`` of results and checkpoints.
        target: ``module.Class`` of its :class:`~models.base.GenerativeModule`.
        display_name: how tables and figures name it.
        color: its matplotlib colour in every figure.
        order: rows and legends are sorted by it.
        figures: ``module.function`` of its report figures, ``f(model, real, generator, sample_kwargs) ->
            list[FigureRows]`` (e.g. the DDPM's forward and reverse chains); None: samples only.
        figure_names: the keys of those figures, for the docs and the report's text.
        sample_options: the keyword arguments its ``sample()`` takes beyond ``n`` and ``generator``
            (their defaults and checks are the family's: ``sample_kwargs_errors``).
        in_lecture: trained by ``make lecture`` by default (``--families`` names any registered family).
        config: a Hydra config node for ``model=NAME`` when the family has no ``conf/model/NAME.yaml``
            (plug-ins), stored in Hydra's ConfigStore by :func:`register_family`; with ``net`` its
            ``net=NAME`` node (default: empty).
    """

    name: str
    target: str
    display_name: str
    color: str = "tab:gray"
    order: int = 100
    figures: str | None = None
    figure_names: tuple[str, ...] = ()
    sample_options: tuple[str, ...] = ()
    in_lecture: bool = True
    config: Mapping[str, Any] | None = None
    net: Mapping[str, Any] = field(default_factory=dict)

    def module_class(self) -> type:
        """The family's LightningModule class (imported on first use)."""
        return _import(self.target)

    def figure_function(self) -> Callable[..., list[FigureRows]] | None:
        return _import(self.figures) if self.figures else None


def _import(path: str) -> Any:
    module, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(module), attr)


_FAMILIES: dict[str, FamilySpec] = {}


def register_family(spec: FamilySpec) -> FamilySpec:
    """Add ``spec`` (replacing one of the same name); a spec with ``config`` also becomes ``model=NAME``."""
    _FAMILIES[spec.name] = spec
    if spec.config is not None:
        from hydra.core.config_store import ConfigStore

        cs = ConfigStore.instance()
        cs.store(group="model", name=spec.name, node=dict(spec.config))
        cs.store(group="net", name=spec.name, node=dict(spec.net))
    return spec


def family_specs() -> list[FamilySpec]:
    """Every registered family, in display order."""
    return sorted(_FAMILIES.values(), key=lambda s: (s.order, s.name))


def family_names() -> list[str]:
    return [s.name for s in family_specs()]


def family_spec(name: str) -> FamilySpec:
    if name not in _FAMILIES:
        raise GenbenchError(f"unknown family {name!r}; registered: {', '.join(family_names())}")
    return _FAMILIES[name]


def other_families_options(name: str) -> set[str]:
    """The sampling options of every registered family but ``name``: one ``eval.sample_kwargs`` serves a sweep over
    families, and each family ignores the options it does not have."""
    own = set(_FAMILIES[name].sample_options) if name in _FAMILIES else set()
    return {o for spec in _FAMILIES.values() for o in spec.sample_options} - own


def display_name(name: str) -> str:
    """The family's display name; other sources (``samples:DIR`` of genbench-evaluate) as they are."""
    return _FAMILIES[name].display_name if name in _FAMILIES else name


def color(name: str, default: str = "gray") -> str:
    return _FAMILIES[name].color if name in _FAMILIES else default


def order(name: str) -> int:
    """Sort key of a family; unregistered names after every registered one."""
    return _FAMILIES[name].order if name in _FAMILIES else 10_000


# --- the built-in families --------------------------------------------------------------------
register_family(FamilySpec(
    name="gan", target="models.gan.GAN", display_name="GAN", color="tab:red", order=10,
    figures="models.figures.gan_figures", figure_names=("gan_interpolation",),
))  # fmt: skip
register_family(FamilySpec(
    name="vae", target="models.vae.VAE", display_name="VAE", color="tab:blue", order=20,
    figures="models.figures.vae_figures", figure_names=("vae_reconstructions", "vae_interpolation"),
))  # fmt: skip
register_family(FamilySpec(
    name="ddpm", target="models.ddpm.DDPM", display_name="DDPM", color="tab:green", order=30,
    figures="models.figures.ddpm_figures", figure_names=("forward_diffusion", "reverse_chain"),
    sample_options=("sampler", "steps", "eta", "spacing"),
))  # fmt: skip
register_family(FamilySpec(
    name="flow", target="models.flow.FlowMatching", display_name="Flow matching", color="tab:orange", order=40,
    figures="models.flow.flow_figures", figure_names=("flow_path", "flow_trajectory"), sample_options=("solver", "steps"),
    # Not in the default lecture: its image and 2-D runs add about 6 minutes to the three families' 10 min 45 s,
    # past the 12-minute budget (docs/performance.md; make lecture FAMILIES=gan,vae,ddpm,flow adds it, docs/families.md).
    in_lecture=False,
))  # fmt: skip
