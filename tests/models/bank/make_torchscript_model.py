"""Scripts a tiny external 2D segmentation network for the TorchScript bank test.

Writes OUT/tiny_seg.pt (TorchScript: N x 4 x H x W -> N x 4 x H x W) and OUT/reference.pt
(a dict with an input and the output Python computed for it), so the C++ side can check that
the network it loaded computes the same thing.
"""
import os
import sys

import torch


class TinySeg(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


def main(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(7)
    model = TinySeg().eval()
    scripted = torch.jit.script(model)
    scripted.save(os.path.join(out_dir, "tiny_seg.pt"))
    x = torch.randn(2, 4, 32, 48)
    with torch.no_grad():
        y = model(x)
    torch.save({"input": x, "output": y}, os.path.join(out_dir, "reference.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
