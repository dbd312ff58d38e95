"""The ``store`` section of the config: where tmops keeps its state (``store.url``), and the
check of that URL, which never quotes it (it may hold a password)."""

from __future__ import annotations

import re
from typing import Any

import attrs

__all__ = ["STORE_SCHEMES", "StoreConfig", "store_url_problem"]

#: the URL schemes of ``store.url``: PostgreSQL (libpq spells it both ways) and SQLite
STORE_SCHEMES = ("postgresql", "postgres", "sqlite")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]{0,15}")


def store_url_problem(url: str) -> str | None:
    """What is wrong with a ``store.url`` (None: nothing). Never quotes the URL: it may hold a
    password."""
    scheme, _, rest = url.partition("://")
    if scheme not in STORE_SCHEMES or not rest:
        # the scheme is named only when it is one (without "://", it is the whole URL)
        named = f"of scheme {scheme!r}" if _SCHEME.fullmatch(scheme) else "without a scheme"
        return (
            "must be postgresql://USER@HOST:PORT/DATABASE or sqlite:///ABSOLUTE/PATH (unset: "
            f"the SQLite file .tmops/tmops.db), got a URL {named}"
        )
    if scheme == "sqlite" and not rest.startswith("/"):
        return "a sqlite URL names an absolute path: sqlite:///ABSOLUTE/PATH (three slashes)"
    if scheme != "sqlite" and not rest.partition("?")[0].partition("/")[2]:
        return "a postgresql URL names its database: postgresql://USER@HOST:PORT/DATABASE"
    return None


def _store_url(instance: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    problem = None if value is None else store_url_problem(value)
    if problem is not None:
        raise ValueError(problem)


@attrs.frozen(kw_only=True)
class StoreConfig:
    #: where tmops keeps its state: ``postgresql://USER@HOST:PORT/DATABASE`` (one database that
    #: engines on several machines share; the password from PGPASSWORD or ~/.pgpass) or
    #: ``sqlite:///PATH``; None: the SQLite file .tmops/tmops.db of the project
    url: str | None = attrs.field(default=None, validator=_store_url)
