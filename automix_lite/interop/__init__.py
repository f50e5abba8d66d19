"""Read and write OpenMixup AutoMix checkpoints (``from_openmixup`` / ``to_openmixup``).

AutoMix: Liu, Li et al., "AutoMix: Unveiling the Power of Mixup for Stronger Classifiers", ECCV 2022,
arXiv:2103.13027. OpenMixup (https://github.com/Westlake-AI/openmixup) trains it as ``AutoMixup`` and saves
mmcv checkpoints ``{"state_dict": ..., "meta": ..., "optimizer": ...}``. The state-dict layout is described in
``docs/checkpoints.md``: ``backbone_q``/``backbone_k`` (online and momentum encoders, with BN
buffers), ``head_{one,mix}_{q,k}.fc``, ``mix_block.query.conv`` (ONE 1x1 conv shared by query and key) and
``mix_block.value``, plus ``backbone.*`` and ``head.*``: aliases of ``backbone_k`` and ``head_one_k`` (the
same tensors stored twice) that OpenMixup uses for inference. Our ``AutoMix`` uses the same module names, so
the mapping is almost the identity; the work here is recognising the architecture from shapes alone.

Recognised architectures (inferred from key patterns and tensor shapes, never from the file name):

* **Backbones**: 4-stage ResNets with torchvision parameter names (OpenMixup ``ResNet``, ``ResNeXt`` and
  ``ResNet_CIFAR``). Stem: ``conv1`` 3x3 = CIFAR stem (3x3 stride-1, no max-pool, our ``*_cifar`` models),
  7x7 = ImageNet stem (timm ResNets). Block: ``conv3`` present = Bottleneck, else BasicBlock. Depth: blocks
  per stage (2,2,2,2 = 18; 3,4,6,3 = 34 / 50; 3,4,23,3 = 101; 3,8,36,3 = 152). ResNeXt / wide ResNets:
  cardinality from the grouped ``conv2`` (out channels / in channels per group) and base width from the
  bottleneck width (32x4d, 32x8d, 64x4d, wide x2). Known configurations map to a name that
  ``create_backbone`` understands (``resnet18_cifar``, ``resnet34_cifar``, ``resnet50_cifar``,
  ``resnext50_cifar``, ``resnet_tiny_cifar``; timm ``resnet18/34/50/101/152``, ``resnext50_32x4d``,
  ``resnext101_32x4d/32x8d/64x4d``, ``wide_resnet50_2/101_2``); any other consistent ResNet is built as a
  module with the same shapes (``model.backbone_name`` is then ``"ResNet"``).
* **Heads**: ``num_classes`` from ``head_*.fc.weight``.
* **Mix Block**: ``query.conv.weight`` [C/r, C(+1), 1, 1] gives the width C and the reduction r; q/k and value
  input channels equal to C+1 mean ``lam_concat`` (ImageNet recipes). The feature stage is the ResNet stage
  (``layer1..layer4``, our stage indices 1..4) whose output channels equal C: ``layer3`` (index 3) in every
  published recipe. ``att_norm`` (mmcv ``ConvModule`` with a norm): a ``query.bn`` (BatchNorm) or ``query.ln``
  (LayerNorm) sub-module, in which case the conv has no bias (mmcv ``bias='auto'``).

Not recognised (a clear error): WideResNet-28-8 (OpenMixup's WRN names differ from ours), ViTs and other
timm families, ResNet-D stems (``conv1.0``), ``lam_concat_v``, SAMix value necks and ``x_qk_concat``.

Deviations / choices:
* The legacy layout of early OpenMixup versions (``mix_block.query.weight``: a plain ``nn.Conv2d``) is also
  read; we always write the ``query.conv`` layout of the documented commit.
* A norm-free checkpoint is loaded exactly. With ``att_norm`` our ``query.conv`` keeps a bias, loaded as 0
  (exact); on writing, a non-zero bias is folded into the BN running mean (exact in train and eval mode) and
  refused for LN (not representable). The mmcv names ``bn``/``ln`` follow mmcv's norm-layer naming rule and
  have not been checked against a real ``att_norm`` checkpoint.
* Hyper-parameters that a state dict does not store (α, momentum, mask loss, ``use_scale``, ``upsample`` ...)
  take ``AutoMix``'s defaults (the AutoMix recipes) unless passed as keyword arguments.
"""
from .openmixup import CheckpointMismatchError, from_openmixup, infer_backbone, to_openmixup

__all__ = ["from_openmixup", "to_openmixup", "CheckpointMismatchError", "infer_backbone"]
