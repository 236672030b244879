"""Deprecated alias: the views of a decoded trajectory live in `npr.view` with the other trajectory views.
Kept for one release; import `npr.view` instead."""

from npr.view import render_tree, summarize  # noqa: F401

__all__ = ["render_tree", "summarize"]
