"""Settings: env overrides, secrets masked, and the README documents every variable."""

from pathlib import Path

from runtime.settings import Settings, settings_env

README = Path(__file__).resolve().parents[2] / "README.md"


def test_env_overrides_and_secrets_are_masked(monkeypatch):
    monkeypatch.setenv("SHELFCAST_TOPIC_PREFIX", "acme.")
    monkeypatch.setenv("SHELFCAST_DATABASE_URL", "postgresql://u:hunter2@db/x")
    settings = Settings()
    assert settings.topics.restock == "acme.restock"
    assert "hunter2" not in str(settings.public_dict()) and "hunter2" not in repr(settings)
    assert settings_env(settings)["SHELFCAST_DATABASE_URL"].endswith("hunter2@db/x")


def test_readme_documents_every_setting():
    text = README.read_text()
    missing = [f"SHELFCAST_{n.upper()}" for n in Settings.model_fields
               if f"`SHELFCAST_{n.upper()}`" not in text]
    assert not missing, f"README lacks {missing}"
