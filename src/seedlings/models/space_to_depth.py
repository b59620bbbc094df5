"""A timm network fed each s×s block of pixels as channels (TResNet's space-to-depth stem).

At twice the image size it keeps detail that a smaller image loses (the thin leaves that tell
Black-grass from Loose Silky-bent) while its layers run at the smaller size: only the first
convolution sees 4× the channels, so it costs about what the network costs at half the size.
"""

from __future__ import annotations

import torch


class SpaceToDepth(torch.nn.Module):
    def __init__(self, net: torch.nn.Module, factor: int):
        super().__init__()
        self.unshuffle = torch.nn.PixelUnshuffle(factor)
        self.net = net
        self.num_features = net.num_features
        # timm's API, as the rest of the code uses it (novelty features, --weights head detection)
        self.default_cfg = {**net.default_cfg, "classifier": "net." + net.default_cfg.get("classifier", "fc")}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(self.unshuffle(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.net.forward_head(x, pre_logits=pre_logits)

    def get_classifier(self) -> torch.nn.Module:
        return self.net.get_classifier()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.unshuffle(x))
