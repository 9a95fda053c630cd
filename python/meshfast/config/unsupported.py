"""What valid Istio meshfast does not serve yet, told apart from what is invalid."""

from __future__ import annotations

from typing import Literal


class Unsupported(str):
    """A problem's message that says meshfast does not serve something Istio accepts.

    A type, not a phrase to search for: ``validate --istio`` (Istio's validity alone) tells
    these apart from errors by it, so every "not implemented yet" is made with this.
    """


Severity = Literal["error", "unsupported", "warning"]
