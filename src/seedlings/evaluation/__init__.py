"""Evaluation: pure metric functions (numpy), reports, plots."""
