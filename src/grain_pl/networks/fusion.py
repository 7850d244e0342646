"""Fusion decoder: decoder features + prior features -> the final HR image (the "Upscaling Priors Decoding
Module").

At each of the finest scales, the decoder's feature and the generator's feature of the same resolution are
concatenated, gated by squeeze-excitation and convolved; every branch is then upsampled (nearest) to the HR
size, the branches are concatenated, gated once more, and a conv head gives RGB (no output activation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from grain_pl.networks.blocks import SqueezeExcitation, conv3x3, conv_lrelu
from grain_pl.networks.checkpointing import maybe_checkpoint
from grain_pl.networks.training_memory import gated_conv_over_parts, recompute_in_strips, upsampled_conv


class FusionBranch(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, se_reduction: int) -> None:
        super().__init__()
        self.se = SqueezeExcitation(in_channels, se_reduction)
        self.convs = nn.Sequential(*conv_lrelu(in_channels, out_channels), *conv_lrelu(out_channels, out_channels))

    def forward(self, decoder_feature: torch.Tensor, prior_feature: torch.Tensor) -> torch.Tensor:
        return self.convs(self.se(torch.cat([decoder_feature, prior_feature], dim=1)))


class Fusion(nn.Module):
    def __init__(self, resolutions: tuple[int, ...], decoder_channels: int, prior_channels: dict[int, int],
                 branch_channels: tuple[int, ...] = (128, 64, 32), head_channels: tuple[int, ...] = (128, 64),
                 se_reduction: int = 16, image_channels: int = 3) -> None:
        super().__init__()
        if len(resolutions) != len(branch_channels):
            raise ValueError(f"one branch width per fusion scale {resolutions}, got {branch_channels}")
        self.resolutions = tuple(resolutions)
        self.branches = nn.ModuleDict({
            str(resolution): FusionBranch(decoder_channels + prior_channels[resolution], width, se_reduction)
            for resolution, width in zip(self.resolutions, branch_channels)
        })
        merged = sum(branch_channels)
        self.merge_se = SqueezeExcitation(merged, se_reduction)
        head: list[nn.Module] = []
        in_channels = merged
        for width in head_channels:  # two convs per width, as the official 224->128->128->64->64 head
            head += conv_lrelu(in_channels, width) + conv_lrelu(width, width)
            in_channels = width
        head.append(conv3x3(in_channels, image_channels))
        self.head = nn.Sequential(*head)
        self.checkpointing = False
        # Training-memory levers (grain_pl.networks.training_memory; GRAIN.set_memory_options switches them)
        self.parts = False
        self.head_strips: int | None = None
        self.polyphase = False

    def forward(self, decoder_features: dict[int, torch.Tensor],
                prior_features: dict[int, torch.Tensor]) -> torch.Tensor:
        lean = torch.is_grad_enabled() and not self.checkpointing
        if lean and self.parts:
            branches = [self._branch_over_parts(self.branches[str(resolution)], decoder_features[resolution],
                                                prior_features[resolution]) for resolution in self.resolutions]
        else:
            branches = [maybe_checkpoint(self.branches[str(resolution)], decoder_features[resolution],
                                         prior_features[resolution], enabled=self.checkpointing)
                        for resolution in self.resolutions]
        if lean and self.head_strips is not None:
            return self._merge_in_strips(branches)
        return maybe_checkpoint(self._merge, *branches, enabled=self.checkpointing)

    @staticmethod
    def _branch_over_parts(branch: FusionBranch, decoder_feature: torch.Tensor,
                           prior_feature: torch.Tensor) -> torch.Tensor:
        """`branch(decoder_feature, prior_feature)` without the concatenation or the gated copy: the SE gate
        comes from the parts' channel means and is folded into the first conv's weights."""
        pooled = torch.cat([decoder_feature.mean(dim=(2, 3), keepdim=True),
                            prior_feature.mean(dim=(2, 3), keepdim=True)], dim=1)
        gate = torch.sigmoid(branch.se.fc2(torch.relu(branch.se.fc1(pooled))))
        out = gated_conv_over_parts(branch.convs[0], [decoder_feature, prior_feature], gate)
        return branch.convs[1:](out)

    def _merge_in_strips(self, branches: list[torch.Tensor]) -> torch.Tensor:
        """`_merge(*branches)`, recomputed strip by strip in the backward pass instead of kept."""
        hr_size = self.resolutions[-1]
        gate = self.merge_se.gate(torch.cat([branch.mean(dim=(2, 3), keepdim=True) for branch in branches], dim=1))
        gates = list(torch.split(gate, [branch.shape[1] for branch in branches], dim=1))
        factors = [hr_size // resolution for resolution in self.resolutions]
        count = len(branches)

        def head_rows(*tensors: torch.Tensor) -> torch.Tensor:
            first_conv = self.head[0]
            out = None
            start = 0
            for part, part_gate, factor in zip(tensors[:count], tensors[count:], factors):
                width = part.shape[1]
                gated = part * part_gate
                weight = first_conv.weight[:, start:start + width]
                if factor == 1:
                    term = F.conv2d(gated, weight, None, 1, 1)
                elif self.polyphase:
                    term = upsampled_conv(gated, weight, factor)
                else:
                    term = F.conv2d(F.interpolate(gated, scale_factor=factor, mode="nearest"), weight, None, 1, 1)
                out = term if out is None else out.add_(term)
                del gated, term
                start += width
            out = out + first_conv.bias.view(1, -1, 1, 1)
            return self.head[1:](out)

        parameters = [p for p in self.head.parameters()]
        halo = sum(1 for layer in self.head if isinstance(layer, nn.Conv2d))
        return recompute_in_strips(head_rows, branches + gates, factors + [None] * count, parameters, hr_size,
                                   halo, self.head_strips)

    def _merge(self, *branches: torch.Tensor) -> torch.Tensor:
        """head(merge_se(cat(upsample(branches)))), without ever holding the concatenated HR-sized map.

        Nearest upsampling repeats pixels, so each channel's mean (all the SE gate sees) is the same before and
        after upsampling; and a conv over a channel concatenation is the sum of convs over its parts. So the
        gate comes from the small branches, and the first head conv is accumulated branch by branch.
        """
        hr_size = self.resolutions[-1]
        gate = self.merge_se.gate(torch.cat([branch.mean(dim=(2, 3), keepdim=True) for branch in branches], dim=1))
        first_conv = self.head[0]
        out = None
        start = 0
        for resolution, branch in zip(self.resolutions, branches):
            width = branch.shape[1]
            gated = branch * gate[:, start:start + width]
            if resolution != hr_size:
                gated = F.interpolate(gated, scale_factor=hr_size // resolution, mode="nearest")
            part = F.conv2d(gated, first_conv.weight[:, start:start + width], padding=first_conv.padding)
            out = part if out is None else out.add_(part)
            del gated, part
            start += width
        out = out + first_conv.bias.view(1, -1, 1, 1)
        return self.head[1:](out)
