"""Each image's command answers --help without a database or secrets (how `make images` checks a
built image), and every service that owns tables has the `migrate` command its Job runs."""

from __future__ import annotations

import importlib
import sys

import pytest


@pytest.mark.parametrize(
    ("service", "owns_tables"),
    [("gateway", False), ("auth", True), ("billing", True), ("sandbox", True), ("runner", True)],
)
def test_help_and_migrate(service, owns_tables, monkeypatch, capsys):
    for name in [n for n in __import__("os").environ if n.startswith("AGENTRY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "argv", [f"python -m agentry.{service}", "--help"])
    main = importlib.import_module(f"agentry.{service}.main").main
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m agentry.{service}")
    assert ("  migrate " in out) == owns_tables


def test_agentry_serve_hands_the_service_no_arguments_of_its_own(monkeypatch):
    from typer.testing import CliRunner

    import agentry.billing.main as billing_main
    from agentry.cli.main import app

    monkeypatch.setattr(sys, "argv", list(sys.argv))  # restored afterwards
    seen = []
    monkeypatch.setattr(billing_main, "main", lambda: seen.append(list(sys.argv)))
    result = CliRunner().invoke(app, ["serve", "billing"])
    assert result.exit_code == 0, result.output
    assert seen == [["agentry serve billing"]]
