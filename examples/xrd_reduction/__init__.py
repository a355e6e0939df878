"""A powder X-ray diffraction reduction: simulate, correct, search, fit and report."""

from __future__ import annotations
