"""docs/configuration.md is generated from the settings: it must say what the code does."""

from __future__ import annotations

import difflib
from pathlib import Path

from pydantic import SecretStr

from app.core.settings import Settings
from app.ops.configdoc import render, settings_docs

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_page_is_in_step_with_the_settings() -> None:
    expected = render()
    actual = PAGE.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                actual.splitlines(keepends=True), expected.splitlines(keepends=True), "docs/configuration.md", "render()"
            )
        )
        raise AssertionError(f"docs/configuration.md is out of step with the settings; run `make configdoc`.\n{diff}")


def test_every_setting_is_described() -> None:
    undocumented = [doc.env_var for doc in settings_docs() if not (doc.description or "").strip()]
    assert undocumented == [], f"add a Field(description=...) to: {', '.join(undocumented)}"


def test_the_page_names_every_environment_variable_pydantic_reads(monkeypatch) -> None:
    """Each documented variable really sets its field (the names are not just pretty)."""
    docs = {doc.env_var: doc for doc in settings_docs()}
    assert "TXLAKE_KAFKA__BOOTSTRAP_SERVERS" in docs and "TXLAKE_TOPIC_SUFFIX" in docs
    monkeypatch.setenv("TXLAKE_BATCHING__FLUSH_SIZE", "1234")
    monkeypatch.setenv("TXLAKE_TOPIC_SUFFIX", "-doc")
    monkeypatch.setenv("TXLAKE_BLACKLIST__COUNTRIES", '["XX"]')
    settings = Settings()
    assert settings.batching.flush_size == 1234
    assert settings.topic_suffix == "-doc"
    assert settings.blacklist.countries == frozenset({"xx"})
    assert {"TXLAKE_BATCHING__FLUSH_SIZE", "TXLAKE_BLACKLIST__COUNTRIES"} <= docs.keys()


def test_secrets_are_marked_and_their_defaults_never_printed() -> None:
    secrets = {doc.env_var for doc in settings_docs() if doc.secret}
    assert {"TXLAKE_MYSQL__PASSWORD", "TXLAKE_ANONYMIZATION__KEY", "TXLAKE_WEB__API_TOKEN"} <= secrets
    page = render()
    defaults = Settings()
    for value in (defaults.mysql.password, defaults.anonymization.key):
        assert isinstance(value, SecretStr)
        assert value.get_secret_value() not in page
    assert "(secret; file `mysql__password`)" in page
