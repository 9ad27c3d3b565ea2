"""Argument checks in the style of kornia's ``KORNIA_CHECK_SHAPE``.

``check_shape(x, ["B", "3", "H", "W"], "image")`` accepts any size for named dimensions (letters),
requires the exact size for digits, and ``"*"`` as the first entry accepts any number of leading
dimensions. On mismatch a :class:`~facerefiner.errors.ShapeError` names the argument, the expected
and the actual shape.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .errors import ShapeError


def check_shape(x: torch.Tensor, dims: Sequence[str], name: str = "tensor") -> None:
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{name}: expected a torch.Tensor of shape {list(dims)}, got {type(x).__name__}")
    shape = tuple(x.shape)
    dims = list(dims)
    if dims and dims[0] == "*":
        rest = dims[1:]
        ok = len(shape) >= len(rest)
        tail = shape[len(shape) - len(rest):] if ok else shape
    else:
        rest = dims
        ok = len(shape) == len(rest)
        tail = shape
    if ok:
        for d, s in zip(rest, tail):
            if d.isdigit() and int(d) != s:
                ok = False
                break
    if not ok:
        raise ShapeError(f"{name}: expected shape {dims}, got {list(shape)}")


def check_same_device(*tensors: torch.Tensor, names: Sequence[str] | None = None) -> None:
    devs = {t.device for t in tensors}
    if len(devs) > 1:
        desc = ", ".join(f"{n}={t.device}" for n, t in zip(names or [f"arg{i}" for i in range(len(tensors))], tensors))
        raise ShapeError(f"tensors must be on one device, got {desc}")


def check_floating(x: torch.Tensor, name: str = "tensor") -> None:
    if not x.is_floating_point():
        raise ShapeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
