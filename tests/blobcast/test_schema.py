"""The schema: generated code up to date, every real-Caffe file parses fully."""

import subprocess
import sys

import pytest
from google.protobuf.unknown_fields import UnknownFieldSet

from blobcast.converters import caffe_pb2 as pb
from blobcast.converters import caffemodel
from blobcast.converters.prototxt import has_unknown_fields, parse_text
from blobcast.schema import ENUMS, FORK_SETTINGS, LAYER_TYPE_FIELDS, MESSAGES

from ..conftest import CAFFE, ROOT


def test_generated_modules_match_the_proto_source():
    pytest.importorskip("grpc_tools")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "generate_proto.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _unknown_anywhere(message) -> list:
    found = [message.DESCRIPTOR.full_name] if len(UnknownFieldSet(message)) else []
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        for item in (value if descriptor.is_repeated else [value]):
            found += _unknown_anywhere(item)
    return found


@pytest.mark.parametrize("path", sorted(CAFFE.rglob("*.caffemodel")), ids=lambda p: p.name)
def test_every_caffe_model_parses_with_no_unknown_field(path):
    # Protobuf's LayerParameter holds BVLC's fields only; the fork settings
    # (SSD's 202-206) are read by layer type and leave nothing unknown.
    net = pb.NetParameter.FromString(path.read_bytes())
    assert len(net.layer) + len(net.layers) > 0
    model = caffemodel.read(str(path))
    assert not has_unknown_fields(model)


@pytest.mark.parametrize("path", sorted(CAFFE.rglob("*.solverstate")), ids=lambda p: p.name)
def test_every_caffe_solver_state_parses_with_no_unknown_field(path):
    assert _unknown_anywhere(pb.SolverState.FromString(path.read_bytes())) == []


# forks2/ nets use fork fields outside caffe.proto (Interp's interp_param has
# input_param's number); test_caffe_forks2 reads them with blobcast.
@pytest.mark.parametrize("path", sorted(p for p in CAFFE.rglob("*.prototxt") if p.parent.name != "forks2"),
                         ids=lambda p: p.name)
def test_every_caffe_prototxt_parses(path):
    message_class = pb.SolverParameter if path.name.startswith("solver") else pb.NetParameter
    message = parse_text(path.read_text(), str(path), message_class)
    assert _unknown_anywhere(message) == [] or message_class is pb.NetParameter


def test_upstream_field_numbers_and_fork_fields():
    layer = pb.LayerParameter.DESCRIPTOR.fields_by_name
    expected = {"convolution_param": 106, "pooling_param": 121, "batch_norm_param": 139,
                "input_param": 143, "swish_param": 147, "clip_param": 148}
    assert {name: layer[name].number for name in expected} == expected
    # Fork settings are the canonical model's, never protobuf's LayerParameter's.
    forks = {"upsample_param": 149, "permute_param": 202, "prior_box_param": 203,
             "detection_output_param": 204, "norm_param": 206, "psroi_pooling_param": 10001,
             "roi_pooling_param": 8266711}
    assert {name: MESSAGES["LayerParameter"][name][0] for name in forks} == forks
    assert not set(FORK_SETTINGS) & set(layer)
    assert pb.PoolingParameter.DESCRIPTOR.fields_by_name["round_mode"].number == 13
    assert pb.SolverParameter.DESCRIPTOR.fields_by_name["layer_wise_reduce"].number == 41


def test_schema_table_mirrors_the_descriptors():
    # Fork fields that share a Caffe field's number (an Interp layer's 143) are
    # the canonical model's only additions: they carry that field's number.
    carried = {name: carrier for per_type in LAYER_TYPE_FIELDS.values()
               for name, (carrier, _) in per_type.items()}
    for name, fields in MESSAGES.items():
        descriptor = pb.DESCRIPTOR.message_types_by_name[name]
        own = [f for f in fields if not (name == "LayerParameter" and (
            f in carried or f in FORK_SETTINGS))]
        assert [f.name for f in descriptor.fields] == own
        for field_name, (number, *_rest) in fields.items():
            if name == "LayerParameter" and field_name in FORK_SETTINGS:
                continue
            field_name = carried.get(field_name, field_name) if name == "LayerParameter" else field_name
            assert descriptor.fields_by_name[field_name].number == number
    assert ENUMS["PoolingParameter.PoolMethod"] == {"MAX": 0, "AVE": 1, "STOCHASTIC": 2}
