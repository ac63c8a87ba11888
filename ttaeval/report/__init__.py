"""Tables built from a run store: per-clip exports and leaderboards."""

from ttaeval.report.tables import clip_table, leaderboard, leaderboard_markdown

__all__ = ["clip_table", "leaderboard", "leaderboard_markdown"]
