"""What shrinks: importance criteria, physical neuron removal, sensitivity scans, pruning plans."""

from __future__ import annotations

__all__: list[str] = []
