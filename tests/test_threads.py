"""grain_pl's thread policy (grain_pl/threads.py): OMP_WAIT_POLICY=PASSIVE before torch loads, unless told otherwise."""

from __future__ import annotations

import sys

import pytest

from grain_pl.threads import POLICY_VARIABLE, apply_thread_policy


@pytest.fixture
def before_torch(monkeypatch):
    """As if torch were not imported yet (the policy only acts then), with neither variable set."""
    monkeypatch.delitem(sys.modules, "torch")
    for variable in ("OMP_WAIT_POLICY", POLICY_VARIABLE):
        monkeypatch.setenv(variable, "")  # set, then delete: monkeypatch then restores what was there before
        monkeypatch.delenv(variable)


def test_waiting_threads_sleep(before_torch, monkeypatch):
    assert apply_thread_policy()
    import os

    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_the_users_setting_wins(before_torch, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert not apply_thread_policy()
    import os

    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_it_can_be_turned_off(before_torch, monkeypatch):
    monkeypatch.setenv(POLICY_VARIABLE, "0")
    assert not apply_thread_policy()
    import os

    assert "OMP_WAIT_POLICY" not in os.environ


def test_too_late_once_torch_is_loaded(monkeypatch):
    for variable in ("OMP_WAIT_POLICY", POLICY_VARIABLE):
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)
    assert "torch" in sys.modules
    assert not apply_thread_policy()
