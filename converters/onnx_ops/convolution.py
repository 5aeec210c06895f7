"""ONNX export and import of convolution and deconvolution: Caffe type to ONNX ops and
back, each handler registered under the type or op it handles."""

from __future__ import annotations

from blobcast.layers.convolution import spatial_settings

from .registry import ExportError, Unsupported, exporter, importer


@exporter("Convolution")
def export_convolution(g, layer, ins, outs, group=None):
    p = layer.type_params
    kernel, stride, pad, dilation = spatial_settings(p, len(g.shape(layer.bottoms[0])) - 2,
                                                     layer.name)
    if p.axis != 1:
        raise ExportError(f"layer {layer.name!r}: convolution axis {p.axis} is not exported")
    inputs = ins + [g.weight(layer, 0)] + ([g.weight(layer, 1)] if p.bias_term else [])
    g.node("Conv", inputs, outs, layer.name, kernel_shape=list(kernel), strides=list(stride),
           pads=list(pad) * 2, dilations=list(dilation), group=p.group if group is None else group)


@exporter("ConvolutionDepthwise")
def export_convolution_depthwise(g, layer, ins, outs):
    """One filter per channel whatever group and num_output say (the fork's rule)."""
    export_convolution(g, layer, ins, outs, group=g.shape(layer.bottoms[0])[1])


@exporter("Deconvolution")
def export_deconvolution(g, layer, ins, outs):
    p = layer.type_params
    kernel, stride, pad, dilation = spatial_settings(p, len(g.shape(layer.bottoms[0])) - 2,
                                                     layer.name)
    inputs = ins + [g.weight(layer, 0)] + ([g.weight(layer, 1)] if p.bias_term else [])
    g.node("ConvTranspose", inputs, outs, layer.name, kernel_shape=list(kernel),
           strides=list(stride), pads=list(pad) * 2, dilations=list(dilation), group=p.group)


@importer("Conv")
def import_conv(im, node, attrs):
    weight = im.tensor(node.input[1])
    if weight is None:
        raise Unsupported("the weights must be constant")
    kernel, strides, both_pads, dilations = im.spatial(node, attrs, weight.shape, symmetric=False)
    ndim = len(kernel)
    pads = [max(b, e) for b, e in zip(both_pads[:ndim], both_pads[ndim:])]
    bias = im.tensor(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    blobs = [weight] + ([bias] if bias is not None else [])
    cuts = _asymmetric_cuts(im, node, kernel, strides, both_pads, dilations)
    top = node.output[0] if not cuts else f"{node.output[0]}/padded"
    im.layer(node, "Convolution", [node.input[0]], [top], blobs,
             convolution_param={"num_output": weight.shape[0], "kernel_size": im.repeated(kernel),
                                "stride": im.repeated(strides), "pad": im.repeated(pads),
                                "dilation": im.repeated(dilations),
                                "group": attrs.get("group", 1), "bias_term": bias is not None})
    for axis, first, last, length in cuts:
        # Caffe pads both sides by the larger pad; the outputs that padding
        # adds at one end are whole output rows (checked): slice them off.
        points = [p for p in (first, last) if 0 < p < length]
        kept = f"{node.output[0]}/axis{axis}" if axis != cuts[-1][0] else node.output[0]
        parts = [f"{top}/cut{axis}_{i}" for i in range(len(points) + 1)]
        parts[1 if first else 0] = kept
        im.layer(node, "Slice", [top], parts, suffix=f"/slice{axis}",
                 slice_param={"axis": axis, "slice_point": points})
        unused = [part for part in parts if part != kept]
        im.layer(node, "Silence", unused, [], suffix=f"/silence{axis}")
        top = kept


def _asymmetric_cuts(im, node, kernel, strides, pads, dilations) -> list:
    """For each axis padded unequally, (axis, first kept output, end of the kept
    outputs, outputs with the larger pad on both sides), when the extra
    padding adds whole outputs; refuses the node otherwise."""
    ndim = len(kernel)
    sizes = im.shape(node.input[0])[2:]
    cuts = []
    for i in range(ndim):
        begin, end = pads[i], pads[ndim + i]
        if begin == end:
            continue
        both, stride, reach = max(begin, end), strides[i], dilations[i] * (kernel[i] - 1) + 1
        if (both - begin) % stride:
            raise Unsupported(f"asymmetric pads {list(pads)}: Caffe pads both sides equally, and "
                              f"this difference is not a whole number of stride-{stride} outputs")
        length = (sizes[i] + 2 * both - reach) // stride + 1
        wanted = (sizes[i] + begin + end - reach) // stride + 1
        first = (both - begin) // stride
        cuts.append((2 + i, first, first + wanted, length))
    return cuts


@importer("ConvTranspose")
def import_conv_transpose(im, node, attrs):
    weight = im.tensor(node.input[1])
    if weight is None:
        raise Unsupported("the weights must be constant")
    if any(attrs.get("output_padding", [])) or "output_shape" in attrs:
        raise Unsupported("output_padding/output_shape have no Caffe equivalent")
    kernel, strides, pads, dilations = im.spatial(node, attrs, weight.shape)
    bias = im.tensor(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    group = attrs.get("group", 1)
    im.layer(node, "Deconvolution", [node.input[0]], [node.output[0]],
             [weight] + ([bias] if bias is not None else []),
             convolution_param={"num_output": weight.shape[1] * group,
                                "kernel_size": im.repeated(kernel),
                                "stride": im.repeated(strides),
                                "pad": im.repeated(pads), "dilation": im.repeated(dilations),
                                "group": group, "bias_term": bias is not None})


# yonghenglh6's DepthwiseConvolution: a grouped convolution, group as given.
exporter("DepthwiseConvolution")(export_convolution)
