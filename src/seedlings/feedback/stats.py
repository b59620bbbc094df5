"""`seedlings feedback stats`: what the people using the service said, counted in the database.

A vote *confirms* the model when its label is what the model predicted, *corrects* it when the model
predicted something else; votes sent without the prediction count in neither (the page always sends it).
"""

from __future__ import annotations

import sqlalchemy as sa

from seedlings.feedback.schema import images, votes
from seedlings.feedback.store import Store

TOP_CONFUSED = 10


def stats(store: Store) -> dict:
    """Counts per label and per model version, the agreement rate, and the most confused pairs."""
    confirmed = sa.func.sum(sa.case((votes.c.predicted == votes.c.label, 1), else_=0))
    corrected = sa.func.sum(sa.case(((votes.c.predicted.is_not(None)) & (votes.c.predicted != votes.c.label), 1),
                                    else_=0))
    per_label = store.query(sa.select(votes.c.label, sa.func.count(), sa.func.count(sa.distinct(votes.c.sha256)))
                            .group_by(votes.c.label).order_by(sa.func.count().desc(), votes.c.label))
    per_model = store.query(sa.select(votes.c.model_name, votes.c.model_version, sa.func.count(), confirmed, corrected)
                            .group_by(votes.c.model_name, votes.c.model_version)
                            .order_by(votes.c.model_name, votes.c.model_version))
    pairs = store.query(sa.select(votes.c.predicted, votes.c.label, sa.func.count())
                        .where(votes.c.predicted.is_not(None), votes.c.predicted != votes.c.label)
                        .group_by(votes.c.predicted, votes.c.label)
                        .order_by(sa.func.count().desc(), votes.c.predicted, votes.c.label).limit(TOP_CONFUSED))
    total_confirmed = sum(int(r[3] or 0) for r in per_model)
    total_corrected = sum(int(r[4] or 0) for r in per_model)
    return {
        "images": store.count(images), "votes": store.count(votes),
        "confirmed": total_confirmed, "corrected": total_corrected,
        "agreement": _rate(total_confirmed, total_corrected),
        "labels": [{"label": r[0], "votes": int(r[1]), "images": int(r[2])} for r in per_label],
        "models": [{"model": r[0], "version": r[1], "votes": int(r[2]), "confirmed": int(r[3] or 0),
                    "corrected": int(r[4] or 0), "agreement": _rate(int(r[3] or 0), int(r[4] or 0))}
                   for r in per_model],
        "confused": [{"predicted": r[0], "label": r[1], "votes": int(r[2])} for r in pairs],
    }


def _rate(confirmed: int, corrected: int) -> float | None:
    return confirmed / (confirmed + corrected) if confirmed + corrected else None
