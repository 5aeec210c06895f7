"""Layer types blobcast reads, writes and lists but the engine does not run:
inputs and data layers (their tops become the net's inputs), losses and
evaluation layers (left out of a deploy net), and fork or recurrent layers
it carries through unchanged."""

from __future__ import annotations

from .base import declare

declare("Input", settings="input_param", role="input", key_settings=("shape",))
for _name, _settings in (("Data", "data_param"), ("ImageData", "image_data_param"),
                         ("HDF5Data", "hdf5_data_param"), ("MemoryData", "memory_data_param"),
                         ("WindowData", "window_data_param"), ("DummyData", "dummy_data_param")):
    declare(_name, settings=_settings, role="data")
declare("AnnotatedData", role="data", origin="SSD (weiliu89)")
declare("VideoData", role="data", origin="video forks (TSN and others)")
declare("DenseImageData", role="data", origin="SegNet (alexgkendall/caffe-segnet)")
for _name, _settings in (("SoftmaxWithLoss", "softmax_param"), ("EuclideanLoss", None),
                         ("SigmoidCrossEntropyLoss", None), ("HingeLoss", "hinge_loss_param"),
                         ("ContrastiveLoss", "contrastive_loss_param"),
                         ("MultinomialLogisticLoss", None), ("InfogainLoss", "infogain_loss_param"),
                         ("Accuracy", "accuracy_param"), ("HDF5Output", "hdf5_output_param")):
    declare(_name, settings=_settings, role="loss")
declare("Python", settings="python_param", key_settings=("module", "layer"), blobs=None)
declare("Parameter", settings="parameter_param", blobs=1)
declare("Recurrent", settings="recurrent_param", blobs=None,
        origin="BVLC Caffe (the base class of RNN and LSTM)")
for _name in ("RNN", "LSTM"):
    declare(_name, settings="recurrent_param", blobs=None)
# SSD, YOLO and segmentation forks' layers (settings fields as the schema numbers them)
for _name in ("Filter", "BatchReindex"):
    declare(_name)
declare("Im2col", settings="convolution_param")
