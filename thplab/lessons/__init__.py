"""Lesson-specific helpers: scenarios, sweeps and questions that only one lesson needs.

Kept in the package (not in the notebooks) so they are tested like the rest.
"""
