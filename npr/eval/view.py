"""Deprecated alias: the views of an evaluated response live in `npr.view` with the other trajectory
views. Kept for one release; import `npr.view` instead."""

from npr.view import Part, ViewError, load_record, parts_of, render_html, render_terminal  # noqa: F401

__all__ = ["Part", "ViewError", "load_record", "parts_of", "render_html", "render_terminal"]
