"""Neutral helpers that any package may import (``sfu``, ``signaling``, ``loadtest``, tests).

Nothing here knows about media, HTTP or the control plane, and nothing here imports another
ShopCast package: that keeps the dependency rule (``signaling`` never imports ``sfu``,
``loadtest`` imports neither) true for the helpers they share.
"""
