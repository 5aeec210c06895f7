"""Losses and evaluation layers: read, written and listed, left out of a
deploy net; the engine reports them and does not run them."""

from __future__ import annotations

from .base import declare

for _name, _settings in (("SoftmaxWithLoss", "softmax_param"), ("EuclideanLoss", None),
                         ("SigmoidCrossEntropyLoss", None), ("HingeLoss", "hinge_loss_param"),
                         ("ContrastiveLoss", "contrastive_loss_param"),
                         ("MultinomialLogisticLoss", None), ("InfogainLoss", "infogain_loss_param"),
                         ("Accuracy", "accuracy_param"), ("HDF5Output", "hdf5_output_param")):
    declare(_name, settings=_settings, role="loss")
