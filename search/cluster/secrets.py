"""Passwords in storage and tracking URLs: kept out of output, logs, MLflow and stored configs.

A URL such as `postgresql+psycopg://user:PASSWORD@host/db` is shown as `user:***@host`, and
stored (in the study, in MLflow params) without its password, as `user@host`. The stored form
still works where the password comes from elsewhere, the usual ways to keep it off command
lines: PostgreSQL's `PGPASSWORD` or `~/.pgpass`, MLflow's `MLFLOW_TRACKING_PASSWORD`, or the
whole URL in `TABSLIM_STORAGE`.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote

__all__ = ["install_log_redaction", "redact", "strip_password", "without_passwords"]

# scheme://user:password@ ; a password holding '@' or '/' must be percent-encoded in a URL.
_CREDENTIALS = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.\-]*://[^:/@\s'\"]*):(?P<password>[^@\s'\"]*)@", re.IGNORECASE
)
# Passwords seen in URLs this process handled, also in decoded form: a driver's message may
# quote either.
_SEEN: set[str] = set()


def _remember(text: str) -> None:
    for match in _CREDENTIALS.finditer(text):
        password = match.group("password")
        if password:
            _SEEN.update({password, unquote(password)})


def redact(text: str) -> str:
    """`text` with every URL password, and every password seen in a URL before, as ***."""
    _remember(text)
    text = _CREDENTIALS.sub(r"\g<head>:***@", text)
    for password in sorted(_SEEN, key=len, reverse=True):
        # Short values would mask ordinary words; a real password is rarely under 4 characters.
        if len(password) >= 4:
            text = text.replace(password, "***")
    return text


def strip_password(url: str) -> str:
    """`url` without its password (`user@host`), for what is stored and read back later."""
    _remember(url)
    return _CREDENTIALS.sub(r"\g<head>@", url)


def without_passwords(value: Any) -> Any:
    """A JSON-like value (a config dump) with the password taken out of every URL in it."""
    if isinstance(value, str):
        return strip_password(value)
    if isinstance(value, dict):
        return {key: without_passwords(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [without_passwords(item) for item in value]
    return value


def install_log_redaction() -> None:
    """Redact every log record as it is made, whichever logger makes it.

    A record factory rather than a handler filter: Optuna and MLflow log through handlers of
    their own that do not propagate to the root logger.
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacts", False):
        return

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _SEEN or "://" in str(record.msg):
            try:
                message = record.getMessage()
            except (TypeError, ValueError):  # arguments that do not fit the format
                message = str(record.msg)
            record.msg, record.args = redact(message), None
        return record

    make_record.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record)
