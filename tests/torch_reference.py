"""torchvision's MobileNetV2, or a plain torch.nn one with its layout and names.

`torchvision_or_reference` gives torchvision's own `mobilenet_v2` where
torchvision imports. It often does not: its wheels are CUDA builds that fail
against the CPU build of torch (`libc10_cuda.so` missing). Then the parity
tests and benchmarks build `mobilenet_v2` below and say so: `features.0` (3x3 stem),
`features.1..17` (inverted residuals, `.conv` as torchvision nests it),
`features.18` (1x1 to 1280), `classifier.1` (Linear). Padding is PyTorch's
symmetric (k - 1) // 2, BatchNorm epsilon 1e-5.
"""


def divisible(value, divisor=8):
  new = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return new + divisor if new < 0.9 * value else new


def mobilenet_v2(torch, num_classes=1000, width_multiplier=1.0):
  nn = torch.nn

  def conv_bn_relu6(cin, cout, kernel=3, stride=1, groups=1):
    return nn.Sequential(
      nn.Conv2d(
        cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False
      ),
      nn.BatchNorm2d(cout),
      nn.ReLU6(inplace=True),
    )

  class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expansion):
      super().__init__()
      hidden = int(round(cin * expansion))
      units = [conv_bn_relu6(cin, hidden, 1)] if expansion != 1 else []
      units += [
        conv_bn_relu6(hidden, hidden, 3, stride, hidden),
        nn.Conv2d(hidden, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
      ]
      self.conv = nn.Sequential(*units)
      self.residual = stride == 1 and cin == cout

    def forward(self, x):
      return x + self.conv(x) if self.residual else self.conv(x)

  class MobileNetV2(nn.Module):
    def __init__(self):
      super().__init__()
      channels = divisible(32 * width_multiplier)
      last = divisible(1280 * max(1.0, width_multiplier))
      features = [conv_bn_relu6(3, channels, 3, 2)]
      for t, c, n, s in [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
      ]:
        out = divisible(c * width_multiplier)
        for i in range(n):
          features.append(
            InvertedResidual(channels, out, s if i == 0 else 1, t)
          )
          channels = out
      features.append(conv_bn_relu6(channels, last, 1))
      self.features = nn.Sequential(*features)
      self.classifier = nn.Sequential(
        nn.Dropout(0.2), nn.Linear(last, num_classes)
      )

    def forward(self, x):
      x = self.features(x).mean(dim=(2, 3))
      return self.classifier(x)

  return MobileNetV2()


def torchvision_or_reference(torch, num_classes=1000, width_multiplier=1.0):
  """(model, what it is, why torchvision was not used or None)."""
  try:
    import torchvision

    model = torchvision.models.mobilenet_v2(
      num_classes=num_classes, width_mult=width_multiplier
    )
    return model, f'torchvision {torchvision.__version__} mobilenet_v2', None
  except Exception as e:  # ImportError, or a CUDA build's RuntimeError
    reason = (
      f'{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ""}'
    )
  return (
    mobilenet_v2(torch, num_classes, width_multiplier),
    'torch.nn MobileNetV2 of tests/torch_reference.py',
    f'torchvision unavailable ({reason})',
  )


def randomize(torch, model, seed=0):
  """Random weights and BatchNorm statistics (nothing downloaded)."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        size = module.num_features
        module.weight.copy_(0.5 + torch.rand(size, generator=generator))
        module.bias.copy_(0.1 * torch.randn(size, generator=generator))
        module.running_mean.copy_(0.1 * torch.randn(size, generator=generator))
        module.running_var.copy_(0.5 + torch.rand(size, generator=generator))
  return model
