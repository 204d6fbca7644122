"""User attributes (age, gender, occupation...) from a dataset's user file, for cold-user profiles and groups.

Only RecBole's ``<name>.user`` atomic file is read today (ML-100K ships ``user_id age gender occupation zip_code``);
other formats have no user file, and :func:`load_user_attributes` then returns an empty mapping — a cold-user
evaluation on such a dataset has no profile text and says so. Values are kept as text: whether a number is banded
is the grouping signal's decision, not the loader's.
"""

from __future__ import annotations

import logging
from pathlib import Path

from zsgen.errors import DataError
from zsgen.loaders.recbole import _rows

logger = logging.getLogger(__name__)

UserAttributes = dict[str, dict[str, str]]

#: The user id column's name in RecBole files.
USER_ID = "user_id"


def user_file(path: str | Path) -> Path | None:
    """The dataset's user file: ``path`` itself when it is a ``.user`` file, else the single ``*.user`` file of the
    dataset's folder (the folder of a file path); None when there is none."""
    path = Path(path)
    if path.is_file():
        if path.suffix == ".user":
            return path
        path = path.parent
    if not path.is_dir():
        return None
    found = sorted(path.glob("*.user"))
    if len(found) > 1:
        raise DataError(f"several user files ({', '.join(p.name for p in found)}); expected one", path=path)
    return found[0] if found else None


def load_user_attributes(path: str | Path, *, encoding: str = "utf-8") -> UserAttributes:
    """Attributes by user id from the dataset at ``path`` (see :func:`user_file`); empty when it has no user file.

    Empty cells are left out of a user's attributes. A malformed header, a row of the wrong width, a row without a
    user id or a user listed twice is a :class:`~zsgen.errors.DataError` naming the file and line.
    """
    source = user_file(path)
    if source is None:
        logger.info("%s: no user file, so no user attributes", path)
        return {}
    header, rows = _rows(source, encoding)
    column = header.column(USER_ID)
    if column is None:
        raise DataError(f"no {USER_ID} column in the header", path=source, line=header.line, field=USER_ID)
    out: UserAttributes = {}
    for line, cells in rows:
        user = cells[column].strip()
        if not user:
            raise DataError("missing user id", path=source, line=line, field=USER_ID)
        if user in out:
            raise DataError(f"user {user!r} is listed twice", path=source, line=line, field=USER_ID)
        out[user] = {
            name: cell.strip()
            for index, (name, cell) in enumerate(zip(header.names, cells, strict=True))
            if index != column and cell.strip()
        }
    return out
