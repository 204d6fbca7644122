"""Bulk recommendation: a users file in, one recommendation line per user out, resumable after a kill.

A users file holds one JSON object a line: ``{"user_id": "u1", "history": ["ids or titles", ...], "profile": "..."}``
(``user_id`` optional — the line number is used — and at least one of ``history`` / ``profile``). The whole file is
checked before any model loads: a bad line stops the run with ``file:line`` and the field.

Users go through :meth:`zsgen.Recommender.recommend_batch` a batch at a time (retrieval in one matrix pass, LLM
calls concurrent up to the backend's ``concurrency``). The output is an append-only log like ``zsgen evaluate``'s
``per_user.jsonl`` (:func:`zsgen.jsonlog.read_log`): each batch is appended and synced before the next
starts, a restarted run cuts a torn last line, skips the users already written and appends the rest, so a killed
run finishes with exactly the lines an uninterrupted one writes. Lines hold the :class:`~zsgen.types.Ranking`
without its timings, so they are reproducible.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zsgen.errors import ConfigError, DataError, UnknownItemError
from zsgen.jsonlog import LogWriter, read_log
from zsgen.recommender import Recommender
from zsgen.retrieval import Request
from zsgen.types import Ranking

logger = logging.getLogger(__name__)

__all__ = ["UserLine", "check_settings", "read_users", "recommend_users", "recommendation_record"]

_FIELDS = ("user_id", "history", "profile")


@dataclass(frozen=True)
class UserLine:
    """One user of a users file, its history resolved to catalog ids."""

    user_id: str
    history: tuple[str, ...]
    profile: str | None
    line: int


def read_users(path: Path, resolve: Any) -> list[UserLine]:
    """Every user of ``path``; ``resolve`` turns an id or title into a catalog id (``Catalog.resolve``).

    Raises :class:`DataError` naming the file, line and field of the first bad line.
    """
    if not path.is_file():
        raise DataError("no such users file", path=path)
    users: list[UserLine] = []
    seen: dict[str, int] = {}
    with path.open("r", encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError as exc:
                raise DataError(
                    f"not a JSON line ({exc.args[0] if exc.args else exc})", path=path, line=number
                ) from None
            if not isinstance(record, dict):
                raise DataError("a user line must be a JSON object", path=path, line=number)
            unknown = sorted(set(record) - set(_FIELDS))
            if unknown:
                raise DataError(
                    f"unknown field (known: {', '.join(_FIELDS)})", path=path, line=number, field=unknown[0]
                )
            user_id = record.get("user_id", str(number))
            if not isinstance(user_id, str | int) or isinstance(user_id, bool) or not str(user_id).strip():
                raise DataError(
                    "user_id must be a non-empty string or integer", path=path, line=number, field="user_id"
                )
            user_id = str(user_id)
            if user_id in seen:
                raise DataError(
                    f"user {user_id!r} is also on line {seen[user_id]}", path=path, line=number, field="user_id"
                )
            seen[user_id] = number
            history = record.get("history") or []
            if not isinstance(history, list):
                raise DataError("history must be a list of item ids or titles", path=path, line=number, field="history")
            resolved: list[str] = []
            for position, key in enumerate(history):
                if not isinstance(key, str | int) or isinstance(key, bool):
                    raise DataError("an item id or title", path=path, line=number, field=f"history[{position}]")
                try:
                    resolved.append(resolve(str(key)))
                except UnknownItemError as exc:
                    raise DataError(str(exc), path=path, line=number, field=f"history[{position}]") from None
            profile = record.get("profile")
            if profile is not None and not isinstance(profile, str):
                raise DataError("profile must be a string", path=path, line=number, field="profile")
            profile = profile if profile and profile.strip() else None
            if not resolved and profile is None:
                raise DataError("give a history or a profile", path=path, line=number, field="history")
            users.append(UserLine(user_id, tuple(resolved), profile, number))
    if not users:
        raise DataError("the users file holds no user", path=path)
    return users


def recommendation_record(user_id: str, ranking: Ranking) -> dict[str, Any]:
    """One output line: the user id and the ranking, without timings (they differ from run to run)."""
    return {"user_id": user_id, **ranking.model_dump(mode="json", exclude={"timings"})}


def check_settings(out: Path, settings: str) -> None:
    """Keep ``settings`` beside ``out`` (``.NAME.settings``), refusing lines written with other settings: a resumed
    run, on either engine, must not append to another configuration's lines."""
    marker = out.parent / f".{out.name}.settings"
    if out.exists() and out.stat().st_size > 0 and marker.exists():
        before = marker.read_text(encoding="utf-8").strip()
        if before != settings:
            raise ConfigError(
                f"{out} was written with other options (settings {before}, now {settings}); use a new --out"
            )
    marker.write_text(settings + "\n", encoding="utf-8")


def _batches(users: Sequence[UserLine], size: int) -> Iterator[Sequence[UserLine]]:
    for start in range(0, len(users), size):
        yield users[start : start + size]


def recommend_users(
    recommender: Recommender,
    users: Sequence[UserLine],
    out: Path,
    *,
    k: int = 10,
    batch_size: int = 64,
    progress: bool | None = None,
    settings: str | None = None,
) -> int:
    """Recommend for every user not yet in ``out`` and append their lines; returns how many were written now.

    ``progress=None`` shows the bar only on a terminal. ``settings`` (a digest of the options) is kept beside ``out``
    as ``.NAME.settings``: a run with other settings refuses to append to lines written with these.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise DataError(f"batch size must be positive, got {batch_size}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if settings is not None:
        check_settings(out, settings)
    done = read_log(out, repair=True)
    wanted = {u.user_id for u in users}
    stray = sorted(set(done) - wanted)
    if stray:
        raise DataError(f"holds users the users file does not (e.g. {stray[:3]}); choose another --out", path=out)
    todo = [u for u in users if u.user_id not in done]
    if done:
        logger.info("resuming: %d of %d users already in %s", len(done), len(users), out)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=len(users), initial=len(done), unit="user", desc="recommend", disable=not show)
    writer = LogWriter(out)
    fallbacks = 0
    try:
        for batch in _batches(todo, batch_size):
            requests = [Request(list(u.history) or None, u.profile) for u in batch]
            rankings = recommender.recommend_batch(requests, k=k, keys=[u.user_id for u in batch])
            writer.write_many([recommendation_record(u.user_id, r) for u, r in zip(batch, rankings, strict=True)])
            fallbacks += sum(r.fallback for r in rankings)
            bar.update(len(batch))
            bar.set_postfix({"fallbacks": str(fallbacks)}, refresh=False)
    finally:
        writer.close()
        bar.close()
    return len(todo)
