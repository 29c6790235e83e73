"""Tests of netcfg time, draw, plot and landscape. ``assert_picture`` checks a rendered image."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A small net with what drawing and timing must handle: scoped (dotted) names, a
# Residual with an identity shortcut, one with a projection, BatchNorm, a fan-out
# (fc read by the loss and by the TEST accuracy).
RESNET = """\
name: TinyRes
inputs:
  data: [1, 8, 8]
  label: {shape: [], dtype: int64}
layers:
  - {name: stem.conv, type: Convolution, bottom: data, num_output: 8, kernel_size: 3, pad: 1}
  - {name: stem.bn, type: BatchNorm}
  - {name: stem.relu, type: ReLU}
  - name: stage1.block1
    type: Residual
    body:
      - {name: conv1, type: Convolution, num_output: 8, kernel_size: 3, pad: 1}
      - {name: bn1, type: BatchNorm}
      - {name: relu1, type: ReLU}
      - {name: conv2, type: Convolution, num_output: 8, kernel_size: 3, pad: 1}
  - name: stage2.block1
    type: Residual
    body:
      - {name: conv1, type: Convolution, num_output: 16, kernel_size: 3, pad: 1, stride: 2}
      - {name: bn1, type: BatchNorm}
    shortcut:
      - {name: proj, type: Convolution, num_output: 16, kernel_size: 1, stride: 2, bias_term: false}
  - {name: pool, type: Pooling, pool: AVE, global_pooling: true}
  - {name: fc, type: InnerProduct, num_output: 10}
  - {name: loss, type: SoftmaxWithLoss, bottom: [fc, label]}
  - {name: accuracy, type: Accuracy, bottom: [fc, label], include: {phase: TEST}}
"""


def assert_picture(path: Path, size: tuple[int, int] | None = None, *, min_size: tuple[int, int] = (100, 100)) -> None:
    """``path`` is a valid image of ``size`` pixels (or at least ``min_size``) that shows
    something: many distinct colours and a spread of pixel values, not a blank canvas."""
    from PIL import Image, ImageStat

    with Image.open(path) as im:
        im.verify()  # a truncated or corrupt file raises here
    with Image.open(path) as im:
        if size is not None:
            assert im.size == size, f"{path} is {im.size}, expected {size}"
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1], f"{path} is only {im.size}"
        rgb = im.convert("RGB")
        colors = rgb.getcolors(maxcolors=1 << 20)
        assert colors is not None and len(colors) > 16, f"{path} has {len(colors or [])} colours: blank?"
        stddev = ImageStat.Stat(rgb.convert("L")).stddev[0]
        assert stddev > 10, f"{path}: pixel standard deviation {stddev:.1f}, nearly uniform"
