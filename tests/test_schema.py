"""Typed configs: one default per setting, its allowed values beside it, one generic check."""

from __future__ import annotations

import dataclasses

import pytest

from genbench.errors import ConfigError
from genbench.schema import check, defaults, setting
from genbench.schema_files import SCHEMA_DIR, schema_yaml, typed_configs
from models.ddpm import DDPM, DDPMConfig
from models.nets.time_mlp import TimeMLP
from models.registry import family_specs
from tests.conftest import compose_config


def test_schema_files_are_generated_from_the_typed_configs():
    """conf/schema/ is what `python -m genbench.schema_files` writes: edit the dataclass, then regenerate."""
    for rel, (cls, title, overrides) in typed_configs().items():
        path = SCHEMA_DIR / f"{rel}.yaml"
        assert path.read_text() == schema_yaml(cls, title, overrides), f"{path} is stale: run python -m genbench.schema_files"


def test_every_setting_says_what_it_is():
    for cls, _, _ in typed_configs().values():
        assert [f.name for f in dataclasses.fields(cls) if not f.metadata.get("doc")] == [], cls.__name__


@pytest.mark.parametrize("family", [s.name for s in family_specs() if s.config is None])  # the built-in families
def test_composed_model_config_takes_the_typed_defaults(family):
    """The YAML selects and overrides: what it does not set is the dataclass default, on every data kind, except
    the values the equal tuning adopted for that data set and family (conf/tuned/<data>_<family>.yaml)."""
    from omegaconf import OmegaConf

    from genbench.schema_files import ROOT

    for data in ("mnist5k", "rings"):
        cfg = compose_config([f"model={family}", f"data={data}"]).model
        cls = typed_configs()[f"model/{family}"][0]
        wired = {k for k in cfg if isinstance(cfg._get_node(k)._value(), str) and "${" in cfg._get_node(k)._value()}
        tuned_file = ROOT / "conf" / "tuned" / f"{data}_{family}.yaml"
        tuned = dict(OmegaConf.load(tuned_file).get("model") or {}) if tuned_file.is_file() else {}
        for key, value in {**defaults(cls), **tuned}.items():
            if key not in wired or key in tuned:
                assert cfg[key] == value, (family, data, key)


@pytest.mark.parametrize("data", sorted(rel.split("/")[1] for rel in typed_configs() if rel.startswith("data/")))
def test_composed_data_config_takes_the_typed_defaults(data):
    """conf/data/<data>.yaml names the data set and its shape; every other setting is the dataclass default,
    and the data module built from the config holds the same typed config as one built in Python."""
    from hydra.utils import get_class, instantiate
    from omegaconf import OmegaConf

    from genbench.schema_files import ROOT

    own = set(OmegaConf.load(ROOT / "conf" / "data" / f"{data}.yaml")) - {"defaults"}
    assert own == {"_target_", "name", "shape"}, data
    node = compose_config([f"data={data}"]).data
    cls = typed_configs()[f"data/{data}"][0]
    assert get_class(node._target_).config_type is cls
    for key, value in defaults(cls).items():
        if key != "shape":
            assert node[key] == value, (data, key)
    if data in ("mnist5k", "rings", "grid"):  # no files needed
        built = instantiate(node).hp
        assert built == cls(**{**defaults(cls), "shape": list(node.shape)})


@dataclasses.dataclass
class Example:
    count: int = setting(3, ge=1, doc="a count")
    rate: float = setting(0.1, gt=0, lt=1, doc="a rate")
    decay: float | None = setting(0.9, ge=0, lt=1, null="off", doc="a decay")
    mode: str = setting("a", choices=("a", "b"), doc="a mode")
    flag: bool = setting(True, doc="a flag")
    weight: float = setting(0.0, ge=0, hint="a penalty weight", doc="a weight")


def test_generic_check_names_key_value_and_what_is_allowed():
    bad = {"count": 0, "rate": 1.0, "decay": 1.5, "mode": "c", "flag": "yes", "weight": float("nan")}
    assert check(Example, bad, "model.") == [
        "model.count=0: must be an integer >= 1",
        "model.rate=1.0: must be a number in the open interval (0, 1)",
        "model.decay=1.5: must be null (off) or a number in [0, 1)",
        "model.mode='c': must be one of ['a', 'b']",
        "model.flag='yes': must be true or false",
        "model.weight=nan: must be a number >= 0 (a penalty weight)",
    ]
    assert check(Example, {"count": True}, "x.") == ["x.count=True: must be an integer >= 1"]  # a bool is no count
    assert check(Example, {"decay": None}, "x.") == [] and check(Example, {}, "x.") == []


def test_constructor_takes_the_typed_config_and_refuses_bad_settings():
    model = DDPM(TimeMLP(2, 16, 1), [2], T=50)
    assert model.T == 50 and model.lr_warmup_steps == DDPMConfig().lr_warmup_steps == 100
    with pytest.raises(ConfigError) as e:
        DDPM(TimeMLP(2, 16, 1), [2], T=0, sample_steps=10, warmup=3)
    assert e.value.problems == [
        "model.warmup: not a setting of DDPM; allowed: " + str(sorted(f.name for f in dataclasses.fields(DDPMConfig))),
        "model.T=0: must be an integer >= 1",
    ]
    assert DDPM.setting_errors({"T": 100, "sample_steps": 200}) == [
        "model.sample_steps=200: must be null (all T steps) or an integer in [1, T=100]"
    ]
