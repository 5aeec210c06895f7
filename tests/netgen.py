"""Small nets for engine tests: a prototxt plus random weights of the right shapes."""

from __future__ import annotations

import numpy as np

import blobcast
from blobcast.converters.prototxt import net_from_text
from blobcast.engine import Net
from blobcast.layers.convolution import spatial_settings


def with_random_weights(text: str, input_shapes: dict, seed: int = 0) -> blobcast.Model:
    """Parse `text` and give each parametrised layer weights of Caffe's shapes,
    found by running shape inference layer by layer with the engine."""
    model = net_from_text(text, "<test net>")
    rng = np.random.RandomState(seed)
    shapes = dict(input_shapes)
    for layer in model.layers:
        if layer.type == "Input":
            continue
        bottoms = [shapes[b] for b in layer.bottoms]
        p = layer.type_params
        blobs = []
        if layer.type == "Convolution":
            kernel, *_ = spatial_settings(p, len(bottoms[0]) - 2, layer.name)
            blobs = [(p.num_output, bottoms[0][1] // p.group) + tuple(kernel)]
            blobs += [(p.num_output,)] if p.bias_term else []
        elif layer.type == "Deconvolution":
            kernel, *_ = spatial_settings(p, len(bottoms[0]) - 2, layer.name)
            blobs = [(bottoms[0][1], p.num_output // p.group) + tuple(kernel)]
            blobs += [(p.num_output,)] if p.bias_term else []
        elif layer.type == "InnerProduct":
            depth = int(np.prod(bottoms[0][p.axis % len(bottoms[0]):]))
            blobs = [(depth, p.num_output) if p.transpose else (p.num_output, depth)]
            blobs += [(p.num_output,)] if p.bias_term else []
        elif layer.type == "BatchNorm":
            blobs = [(bottoms[0][1],), (bottoms[0][1],), (1,)]
        elif layer.type == "Scale" and len(bottoms) == 1:
            blobs = [(bottoms[0][1],)] + ([(bottoms[0][1],)] if p.bias_term else [])
        elif layer.type == "PReLU":
            blobs = [()] if p.channel_shared else [(bottoms[0][1],)]
        for i, shape in enumerate(blobs):
            if layer.type == "BatchNorm":
                values = ([rng.normal(0, 0.3, shape), rng.uniform(0.5, 2, shape), np.ones(shape)])[i]
            else:
                values = rng.normal(0, 0.3, shape)
            layer.blobs.append(blobcast.Blob(np.asarray(values, np.float32)))
        probe = blobcast.Model(net=model.net, layers=[
            blobcast.Layer("in" + str(j), "Input", tops=[b],
                           input_param={"shape": [{"dim": list(shapes[b])}]})
            for j, b in enumerate(dict.fromkeys(layer.bottoms))] + [layer])
        outputs = Net(probe).forward({b: np.zeros(shapes[b], np.float32)
                                      for b in dict.fromkeys(layer.bottoms)}, keep_all=True)
        for top in layer.tops:
            shapes[top] = outputs[top].shape
    return model


HEADER = 'layer { name: "data" type: "Input" top: "data" input_param { shape { %s } } }\n'


def net(text: str, weights: dict | None = None, **options) -> Net:
    model = net_from_text(text, "<test>")
    for name, arrays in (weights or {}).items():
        model[name].blobs = [blobcast.Blob(np.asarray(a, np.float32)) for a in arrays]
    return Net(model, **options)
