"""Image tensors: uint8 CHW, squashed to ``size x size``; augmentations in, uint8 out; normalise per batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from classbench.errors import ClassbenchError

AUGMENT_KINDS: tuple[str, ...] = ("none", "light", "strong", "aerial")


def to_uint8_tensor(img: Image.Image | torch.Tensor | np.ndarray, size: int) -> torch.Tensor:
    """RGB image -> uint8 tensor ``[3, size, size]`` (aspect ratio not kept; bilinear with antialias).

    Accepts a PIL image (RGB), an HWC uint8 array or a CHW uint8 tensor.
    """
    if isinstance(img, Image.Image):
        tensor = F.pil_to_tensor(img if img.mode == "RGB" else img.convert("RGB"))
    elif isinstance(img, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
    else:
        tensor = img
    if tuple(tensor.shape[-2:]) != (size, size):
        tensor = F.resize(tensor, [size, size], interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
    return tensor.contiguous()


class RandomRot90(torch.nn.Module):
    """Rotate by a random multiple of 90 degrees (overhead imagery has no "up")."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = int(torch.randint(4, (1,)).item())
        return torch.rot90(x, k, dims=(-2, -1)) if k else x


def train_augment(kind: str, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Training augmentation for uint8 CHW tensors of ``size x size``; picklable (DataLoader workers).

    none: identity. light: random resized crop (scale 0.7-1) + horizontal flip. strong: light + colour
    jitter + rotation up to 15 degrees. aerial: light + vertical flip + random 90-degree rotations.
    """
    light = [v2.RandomResizedCrop(size, scale=(0.7, 1.0), antialias=True), v2.RandomHorizontalFlip()]
    if kind == "none":
        return v2.Identity()
    if kind == "light":
        return v2.Compose(light)
    if kind == "strong":
        return v2.Compose([*light, v2.ColorJitter(0.3, 0.3, 0.3, 0.03), v2.RandomRotation(15)])
    if kind == "aerial":
        return v2.Compose([*light, v2.RandomVerticalFlip(), RandomRot90()])
    raise ClassbenchError(f"augment '{kind}': unknown; choose one of {', '.join(AUGMENT_KINDS)}")


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``[B,3,S,S]`` or ``[3,S,S]`` -> float32 ``(x/255 - mean) / std`` on the batch's device.

    A floating-point input is taken to be in 0..1 already.
    """
    x = batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch.float()
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    return (x - m) / s
