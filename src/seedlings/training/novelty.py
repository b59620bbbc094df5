"""Moved to seedlings.models.novelty (training and export share it); this name stays until fit.py imports it there."""

from seedlings.models.novelty import *  # noqa: F401,F403
from seedlings.models.novelty import NOVELTY_FILE, fit_run, wrap  # noqa: F401  (what fit.py uses)
