"""The network an artifact holds, run in NumPy: linear layers with ReLU between them.

Weights come as a PyTorch-style state_dict (``"<layer>.weight"`` of shape (out, in) and an
optional ``"<layer>.bias"`` of shape (out,)), whatever wrote it: the trainer's safetensors, a
``.pt`` read by :mod:`openclaw.model.safe_pt`, or a plain ``torch.nn.Linear(10, 2).state_dict()``
(layer name ``""``). No torch is needed to run it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from openclaw.errors import ArtifactError

F32 = npt.NDArray[np.float32]

ACTIVATIONS: Final = ("relu",)
_DIGITS: Final = re.compile(r"^\d+$")


@dataclass(frozen=True, slots=True)
class Layer:
    """One linear layer. The weight is kept transposed, (in, out), so a batch runs as
    ``x @ weight_t`` on contiguous memory."""

    name: str
    weight_t: F32
    bias: F32 | None

    @property
    def n_in(self) -> int:
        return int(self.weight_t.shape[0])

    @property
    def n_out(self) -> int:
        return int(self.weight_t.shape[1])


@dataclass(frozen=True, slots=True)
class MLP:
    """Linear layers in order, ``activation`` between them and none after the last."""

    layers: tuple[Layer, ...]
    activation: str = "relu"

    def __post_init__(self) -> None:
        if not self.layers:
            raise ArtifactError("a network needs at least one linear layer")
        if self.activation not in ACTIVATIONS:
            raise ArtifactError(
                f"unknown activation {self.activation!r} (known: {', '.join(ACTIVATIONS)})"
            )
        for before, after in zip(self.layers, self.layers[1:], strict=False):
            if before.n_out != after.n_in:
                raise ArtifactError(
                    f"layers do not chain: {before.name or '<root>'} gives {before.n_out} "
                    f"values, {after.name or '<root>'} takes {after.n_in}"
                )

    @property
    def n_inputs(self) -> int:
        return self.layers[0].n_in

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].n_out

    def forward(self, x: F32) -> F32:
        """Rows of ``x`` (n, n_inputs) in, rows of outputs (n, n_outputs) out; ``x`` is not
        modified (the first product makes the buffer the rest works in place on)."""
        last = len(self.layers) - 1
        h = x
        for i, layer in enumerate(self.layers):
            h = h @ layer.weight_t
            if layer.bias is not None:
                h += layer.bias
            if i < last:
                np.maximum(h, 0.0, out=h)
        return h

    def state_dict(self) -> dict[str, F32]:
        """The weights under their PyTorch names, weights (out, in): what the artifact stores."""
        out: dict[str, F32] = {}
        for layer in self.layers:
            prefix = f"{layer.name}." if layer.name else ""
            out[prefix + "weight"] = np.ascontiguousarray(layer.weight_t.T)
            if layer.bias is not None:
                out[prefix + "bias"] = layer.bias.copy()
        return out


def natural_key(name: str) -> tuple[tuple[int, int, str], ...]:
    """``net.2`` before ``net.10``: dotted parts compared as numbers where they are numbers."""
    return tuple(
        (0, int(part), "") if _DIGITS.match(part) else (1, 0, part) for part in name.split(".")
    )


def _split(key: str) -> tuple[str, str]:
    prefix, _, leaf = key.rpartition(".")
    return prefix, leaf


def _as_float32(name: str, value: npt.ArrayLike, *, source: str) -> F32:
    array = np.asarray(value)
    if array.dtype.kind not in "fiub":
        raise ArtifactError(f"{source}: {name!r} holds {array.dtype}, not numbers")
    out = np.ascontiguousarray(array, dtype=np.float32)
    if not np.all(np.isfinite(out)):
        # A NaN weight makes every prediction NaN: refuse at load, not per request.
        raise ArtifactError(f"{source}: {name!r} holds NaN or infinite values (in float32)")
    return out


def mlp_from_state_dict(
    weights: Mapping[str, npt.ArrayLike],
    *,
    order: Sequence[str] | None = None,
    activation: str = "relu",
    source: str = "state_dict",
) -> MLP:
    """The network of a state_dict of linear layers.

    ``order`` names the layers (the key prefixes) in the order they run; without it they run
    in natural order of their names (``0, 1, 2, 10``; ``fc1, fc2``), which is the order of an
    ``nn.Sequential`` and checked by the layers having to chain. Anything but ``weight`` and
    ``bias`` entries (a BatchNorm's running mean, an embedding) is refused: it is not a plain
    stack of linear layers, and silently ignoring it would run a different network.
    """
    if not weights:
        raise ArtifactError(f"{source}: holds no weights", reason="invalid")
    grouped: dict[str, dict[str, npt.ArrayLike]] = {}
    for key, value in weights.items():
        prefix, leaf = _split(key)
        if leaf not in ("weight", "bias"):
            raise ArtifactError(
                f"{source}: {key!r} is neither a weight nor a bias: not a plain state_dict of "
                "linear layers"
            )
        grouped.setdefault(prefix, {})[leaf] = value
    names = sorted(grouped, key=natural_key) if order is None else list(order)
    if order is not None and sorted(names) != sorted(grouped):
        raise ArtifactError(
            f"{source}: the layers listed ({', '.join(names) or 'none'}) are not the layers "
            f"stored ({', '.join(sorted(grouped, key=natural_key))})"
        )
    layers: list[Layer] = []
    for name in names:
        parts = grouped[name]
        label = f"{name}.weight" if name else "weight"
        if "weight" not in parts:
            raise ArtifactError(f"{source}: {name or '<root>'} has a bias but no weight")
        weight = _as_float32(label, parts["weight"], source=source)
        if weight.ndim != 2:
            raise ArtifactError(
                f"{source}: {label!r} has shape {tuple(weight.shape)}; a linear layer's weight "
                "is 2-D (out, in)"
            )
        bias: F32 | None = None
        if "bias" in parts:
            bias_label = f"{name}.bias" if name else "bias"
            bias = _as_float32(bias_label, parts["bias"], source=source)
            if bias.shape != (weight.shape[0],):
                raise ArtifactError(
                    f"{source}: {bias_label!r} has shape {tuple(bias.shape)}, expected "
                    f"({weight.shape[0]},) to match {label!r} {tuple(weight.shape)}"
                )
        layers.append(Layer(name=name, weight_t=np.ascontiguousarray(weight.T), bias=bias))
    try:
        return MLP(layers=tuple(layers), activation=activation)
    except ArtifactError as exc:
        raise ArtifactError(f"{source}: {exc}") from None
