"""Reference models, registered by name: ``create_model(name, **kwargs)``.

========================  ==========================================================
name                      model
========================  ==========================================================
``tutorial_lenet``        LeNet of the PyTorch pruning tutorial (MNIST)
``lenet_300_100``         MLP 784-300-100-10 (LeCun et al. 1998; Han et al. 2015)
``lenet5``                Caffe LeNet-5, 20/50 conv, fc 500 (MNIST)
``conv2/4/6``             Frankle & Carbin 2019 lottery-ticket CIFAR-10 nets
``vgg11_bn/vgg16_bn``     VGG with BN for CIFAR, Linear(512, classes) classifier
``resnet20/32/56``        He et al. 2016 CIFAR ResNets (option-B shortcuts default)
``mobilenetv2_cifar``     MobileNetV2 (Sandler et al. 2018) for 32×32 inputs
``gpt_tiny``              small GPT-style decoder LM (separate q/k/v/out)
``resnet18/50_imagenet``  He et al. 2016 ImageNet ResNets (224×224, torchvision layout)
``mobilenetv2_imagenet``  MobileNetV2 for 224×224 inputs (torchvision layout)
``vgg16_bn_imagenet``     VGG-16 with BN and the 25088-4096-4096 ImageNet classifier
========================  ==========================================================

Each is registered with the input it takes (:func:`register_model`):
``model_input_shape(name)`` is one sample's shape without the batch dim and
``example_input(name, batch_size)`` a seeded example (token ids for
``gpt_tiny``). ``gpt_tiny``'s attention heads and MLP neurons are found by
:func:`prunekit.coupling.attention_layers` / :func:`~prunekit.coupling.mlp_layers`
through the layer handlers it registers, so :func:`prunekit.prune_heads` and
:func:`prunekit.prune_mlp_neurons` remove them.
"""

from .registry import (
    MODELS,
    ModelInput,
    create_model,
    example_input,
    list_models,
    model_input,
    model_input_shape,
    register_model,
)
from .weights import load_weights
from . import conv, gpt, lenet, mlp, mobilenet, resnet_cifar, vgg  # noqa: F401  (register the models)
from . import mobilenet_imagenet, resnet_imagenet, vgg_imagenet  # noqa: F401  (register the models)

__all__ = [
    "MODELS",
    "ModelInput",
    "create_model",
    "example_input",
    "list_models",
    "load_weights",
    "model_input",
    "model_input_shape",
    "register_model",
]
