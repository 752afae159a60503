"""Reference models, registered by name: ``create_model(name, **kwargs)``.

=====================  ==========================================================
name                   model
=====================  ==========================================================
``tutorial_lenet``     LeNet of the PyTorch pruning tutorial (MNIST)
``lenet_300_100``      MLP 784-300-100-10 (LeCun et al. 1998; Han et al. 2015)
``lenet5``             Caffe LeNet-5, 20/50 conv, fc 500 (MNIST)
``conv2/4/6``          Frankle & Carbin 2019 lottery-ticket CIFAR-10 nets
``vgg11_bn/vgg16_bn``  VGG with BN for CIFAR, Linear(512, classes) classifier
``resnet20/32/56``     He et al. 2016 CIFAR ResNets (option-B shortcuts default)
``mobilenetv2_cifar``  MobileNetV2 (Sandler et al. 2018) for 32×32 inputs
``gpt_tiny``           small GPT-style decoder LM (separate q/k/v/out)
=====================  ==========================================================
"""

from .registry import MODELS, create_model, list_models
from .weights import load_weights
from . import conv, gpt, lenet, mlp, mobilenet, resnet_cifar, vgg  # noqa: F401  (register the models)

__all__ = ["MODELS", "create_model", "list_models", "load_weights"]
