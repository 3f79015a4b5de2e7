"""Which sharer layer feeds each receiver layer.

The published fusers use one fuser per receiver layer. ``last_aligned`` lines up
the last layers of both stacks and walks to the front; ``k_nearest`` places both
stacks uniformly on [0, 1] and takes the nearest sharer layer.
"""

from __future__ import annotations

from dataclasses import dataclass

MAPPINGS = ("last_aligned", "k_nearest")


@dataclass(frozen=True)
class LayerLink:
    """Receiver layer ``receiver_layer`` is fused from ``sharer_layer`` by fuser ``fuser_index``."""

    receiver_layer: int
    sharer_layer: int
    fuser_index: int


def last_aligned(receiver_layers: int, sharer_layers: int) -> list[int]:
    _check(receiver_layers, sharer_layers)
    shift = sharer_layers - receiver_layers
    return [min(max(t + shift, 0), sharer_layers - 1) for t in range(receiver_layers)]


def k_nearest(receiver_layers: int, sharer_layers: int) -> list[int]:
    _check(receiver_layers, sharer_layers)

    def place(i: int, n: int) -> float:
        return i / (n - 1) if n > 1 else 0.0

    out = []
    for t in range(receiver_layers):
        x = place(t, receiver_layers)
        # ties go to the lower sharer layer, so the map is deterministic
        out.append(min(range(sharer_layers), key=lambda s: (abs(place(s, sharer_layers) - x), s)))
    return out


def build_layer_map(mapping: str, receiver_layers: int, sharer_layers: int) -> list[LayerLink]:
    """One link per receiver layer, fuser ``i`` for receiver layer ``i``."""
    if mapping not in MAPPINGS:
        raise ValueError(f"unknown layer mapping {mapping!r}; use one of {', '.join(MAPPINGS)}")
    fn = last_aligned if mapping == "last_aligned" else k_nearest
    return [LayerLink(t, s, t) for t, s in enumerate(fn(receiver_layers, sharer_layers))]


def _check(receiver_layers: int, sharer_layers: int) -> None:
    if receiver_layers < 1 or sharer_layers < 1:
        raise ValueError("both models need at least one layer")
