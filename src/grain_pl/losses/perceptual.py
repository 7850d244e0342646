"""LPIPS (AlexNet, v0.1) as a frozen loss: GRAIN's perceptual term (docs/method.md §2.2 and §5.5).

The network is the `lpips` package's own `LPIPS(net="alex", version="0.1")`, with its shipped linear layers;
only the ImageNet AlexNet backbone is loaded by us, from torchvision's cache or grain_pl's converted copy
(`grain_pl.weights.lpips_alexnet`), so building it never touches the network.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from grain_pl.weights.io import PathLike, load_strict
from grain_pl.weights.lpips_alexnet import find_alexnet_weights, load_alexnet_features, missing_weights_message


def _lpips_backbone_state(backbone: nn.Module, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision `features.{i}.*` -> lpips `slice{k}.{i}.*`.

    lpips cuts torchvision's `features` Sequential into slice1..slice5 but keeps every layer's original
    index as its name (features.3 becomes slice2.3), so the mapping is read off the module itself.
    """
    state: dict[str, torch.Tensor] = {}
    for slice_number in range(1, backbone.N_slices + 1):
        block = getattr(backbone, f"slice{slice_number}")
        for layer_index, layer in block.named_children():
            for param_name, _ in layer.named_parameters(recurse=False):
                torchvision_key = f"features.{layer_index}.{param_name}"
                state[f"slice{slice_number}.{layer_index}.{param_name}"] = features[torchvision_key]
    return state


class PerceptualLoss(nn.Module):
    """LPIPS(alex, v0.1) distance between images in [-1, 1]; frozen and locked in eval mode.

    Args:
        resize_to: compute LPIPS at this square size after an antialiased bilinear resize (pSp uses 256),
            or at the input size when None (the official GRAIN computes it at the full 1024).
        reduction: "mean" over the batch (a scalar) or "none" (one distance per sample, shape (B,)).
        weights_path: AlexNet weights, a torchvision `.pth` or grain_pl's safetensors; default: the first
            of torchvision's cache and grain_pl's cache that exists.
    """

    def __init__(
        self,
        resize_to: int | None = None,
        reduction: Literal["mean", "none"] = "mean",
        weights_path: PathLike | None = None,
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        if resize_to is not None and resize_to < 32:
            raise ValueError(f"resize_to={resize_to} is too small for AlexNet's five conv layers (use >= 32)")
        path = Path(weights_path) if weights_path is not None else find_alexnet_weights()
        if path is None:
            raise RuntimeError(missing_weights_message())
        features = load_alexnet_features(path)

        import lpips  # deferred: importing lpips pulls in its trainer and torchvision models

        with warnings.catch_warnings():
            # pnet_rand=True builds torchvision's AlexNet with the legacy `pretrained=False` flag: nothing is
            # downloaded, torchvision only warns about the flag. We load the backbone ourselves below.
            warnings.filterwarnings("ignore", message=r".*(pretrained|weight enum).*", category=UserWarning)
            self.lpips = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
        load_strict(self.lpips.net, _lpips_backbone_state(self.lpips.net, features),
                    source=path, what="the LPIPS AlexNet backbone")

        self.resize_to = resize_to
        self.reduction = reduction
        self.weights_path = path
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> PerceptualLoss:
        # Frozen auxiliary net: parents (and Lightning) call .train() on every child; staying in eval keeps
        # the dropout inside lpips' linear layers off.
        return super().train(False)

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        if self.resize_to is None or tuple(images.shape[-2:]) == (self.resize_to, self.resize_to):
            return images
        return F.interpolate(images, size=(self.resize_to, self.resize_to), mode="bilinear",
                             align_corners=False, antialias=True)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """LPIPS between `output` and `target` (B, 3, H, W) in [-1, 1]: a scalar, or (B,) if reduction="none"."""
        if output.shape != target.shape or output.ndim != 4 or output.shape[1] != 3:
            raise ValueError(f"expected two (B, 3, H, W) images of the same shape, "
                             f"got {tuple(output.shape)} and {tuple(target.shape)}")
        distance = self.lpips(self._resize(output), self._resize(target)).flatten()  # (B, 1, 1, 1) -> (B,)
        return distance.mean() if self.reduction == "mean" else distance

    def extra_repr(self) -> str:
        return f"net=alex, version=0.1, resize_to={self.resize_to}, reduction={self.reduction!r}"
