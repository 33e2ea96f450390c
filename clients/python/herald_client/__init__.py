"""Publish to Herald groups from Python, and sign client tokens."""

from .client import AsyncHerald, Herald, HeraldError, Result
from .tokens import make_token

__all__ = ["AsyncHerald", "Herald", "HeraldError", "Result", "make_token"]
