"""Runnable example workflows for aioflow (each one a package, so workers import its tasks by name)."""

from __future__ import annotations
