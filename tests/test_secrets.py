"""URL passwords: shown as ***, stored without, and scrubbed from log records."""

from __future__ import annotations

import logging

import pytest

from search.cluster import install_log_redaction, redact, strip_password, without_passwords


@pytest.mark.parametrize(
    ("url", "shown", "stored"),
    [
        ("postgresql+psycopg://ann:Hunter-22@db:5432/s", "postgresql+psycopg://ann:***@db:5432/s",
         "postgresql+psycopg://ann@db:5432/s"),
        ("http://bob:p%40ss-word@mlflow:5000", "http://bob:***@mlflow:5000",
         "http://bob@mlflow:5000"),
        ("postgresql://ann@db/s", "postgresql://ann@db/s", "postgresql://ann@db/s"),
        ("mlruns/optuna.journal", "mlruns/optuna.journal", "mlruns/optuna.journal"),
        ("sqlite:///mlruns/mlflow.db", "sqlite:///mlruns/mlflow.db", "sqlite:///mlruns/mlflow.db"),
    ],
)  # fmt: skip
def test_urls_are_shown_with_stars_and_stored_without_the_password(
    url: str, shown: str, stored: str
) -> None:
    assert redact(url) == shown
    assert strip_password(url) == stored


def test_a_password_seen_once_is_scrubbed_from_later_text_too() -> None:
    redact("postgresql://ann:Seen-Before-9@db/s")
    # A driver's message may quote the password alone, or decoded.
    assert redact("login failed with 'Seen-Before-9'") == "login failed with '***'"
    redact("http://bob:caf%C3%A9-pw@host")
    assert "café-pw" not in redact("bad password café-pw")


def test_config_dumps_lose_every_url_password() -> None:
    dump = {
        "search": {"storage": "postgresql://ann:Dump-Pw-1@db/s", "n_trials": 3},
        "tracking": {"uri": "http://bob:Dump-Pw-2@host:5000"},
        "list": ["https://c:Dump-Pw-3@x/y", 1.5, None],
    }
    assert without_passwords(dump) == {
        "search": {"storage": "postgresql://ann@db/s", "n_trials": 3},
        "tracking": {"uri": "http://bob@host:5000"},
        "list": ["https://c@x/y", 1.5, None],
    }


def test_log_records_of_any_logger_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    install_log_redaction()  # twice is harmless
    logger = logging.getLogger("optuna.storages.fake")
    with caplog.at_level(logging.INFO, logger="optuna.storages.fake"):
        logger.info("connecting to %s", "postgresql://ann:Log-Pw-77@db/s")
        logger.info("retrying with %r", "Log-Pw-77")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["connecting to postgresql://ann:***@db/s", "retrying with '***'"]
