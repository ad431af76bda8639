"""The gateway's settings sit on the services' shared base: outside dev mode the placeholder
internal token is refused, as every service refuses it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentry.gateway.config import GatewaySettings
from agentry.servicekit.settings import DEV_INTERNAL_TOKEN, ServiceSettings


def test_the_gateway_settings_are_service_settings_with_their_own_prefix(monkeypatch) -> None:
    monkeypatch.setenv("AGENTRY_GATEWAY_PORT", "8123")
    monkeypatch.setenv("AGENTRY_LOG_LEVEL", "DEBUG")
    settings = GatewaySettings()
    assert isinstance(settings, ServiceSettings)
    assert (settings.port, settings.log_level, settings.dev_mode) == (8123, "DEBUG", True)


@pytest.mark.parametrize("token", [None, DEV_INTERNAL_TOKEN, "short"])
def test_outside_dev_mode_a_placeholder_internal_token_is_refused(monkeypatch, token) -> None:
    monkeypatch.setenv("AGENTRY_DEV_MODE", "false")
    if token is None:
        monkeypatch.delenv("AGENTRY_INTERNAL_TOKEN", raising=False)
    else:
        monkeypatch.setenv("AGENTRY_INTERNAL_TOKEN", token)
    with pytest.raises(ValidationError, match="AGENTRY_INTERNAL_TOKEN"):
        GatewaySettings()
    monkeypatch.setenv("AGENTRY_INTERNAL_TOKEN", "s" * 32)
    assert GatewaySettings().internal_token.get_secret_value() == "s" * 32
