"""Shared settings: the internal credential is required outside dev mode and never printed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentry.servicekit import DEV_INTERNAL_TOKEN, ServiceSettings


def test_dev_mode_accepts_the_dev_credential(monkeypatch):
    monkeypatch.delenv("AGENTRY_INTERNAL_TOKEN", raising=False)
    monkeypatch.delenv("AGENTRY_DEV_MODE", raising=False)
    assert ServiceSettings().internal_token.get_secret_value() == DEV_INTERNAL_TOKEN


@pytest.mark.parametrize("token", [DEV_INTERNAL_TOKEN, "short"])
def test_production_refuses_placeholder_or_short_credentials(monkeypatch, token):
    monkeypatch.setenv("AGENTRY_DEV_MODE", "false")
    monkeypatch.setenv("AGENTRY_INTERNAL_TOKEN", token)
    with pytest.raises(ValidationError) as err:
        ServiceSettings()
    assert "AGENTRY_INTERNAL_TOKEN" in str(err.value)
    assert token not in str(err.value).replace("AGENTRY_INTERNAL_TOKEN", "")


def test_production_accepts_a_real_secret_and_hides_it(monkeypatch):
    secret = "s3cr3t-" + "x" * 30
    monkeypatch.setenv("AGENTRY_DEV_MODE", "false")
    monkeypatch.setenv("AGENTRY_INTERNAL_TOKEN", secret)
    settings = ServiceSettings()
    assert settings.internal_token.get_secret_value() == secret
    assert secret not in repr(settings)
