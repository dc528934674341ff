"""The NVML availability check is dropped only where it cannot work."""

import os

import torch

from genbench.devices import NVML_CHECK, drop_unusable_nvml_check


def test_unloadable_nvml_drops_the_check_and_keeps_the_answer(monkeypatch):
    monkeypatch.setenv(NVML_CHECK, "1")
    before = torch.cuda.is_available()
    assert drop_unusable_nvml_check(loadable=lambda: False) is True
    assert NVML_CHECK not in os.environ
    assert torch.cuda.is_available() == before


def test_loadable_nvml_or_an_unset_variable_is_left_alone(monkeypatch):
    monkeypatch.setenv(NVML_CHECK, "1")
    assert drop_unusable_nvml_check(loadable=lambda: True) is False
    assert os.environ[NVML_CHECK] == "1"
    monkeypatch.setenv(NVML_CHECK, "0")  # the user's own choice
    assert drop_unusable_nvml_check(loadable=lambda: False) is False
    assert os.environ[NVML_CHECK] == "0"
    monkeypatch.delenv(NVML_CHECK)
    assert drop_unusable_nvml_check(loadable=lambda: False) is False
