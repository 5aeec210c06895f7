"""Blob versions as objects.

In a Caffe net a blob name can hold several values in turn: a layer that
names its bottom as its top (ReLU in place) writes a new version of the same
blob. Each version here is one object: the blob's name, its version index,
the layer that wrote it (None for a net input, or a blob no layer of the list
writes) and the layers that read it. Each version also has one name of its
own, given once here for every user (the ONNX export's value names, the
engine's release and in-place decisions): a blob's last version keeps the
blob's name, as Caffe's net.blobs does, earlier ones are "<blob>:<layer>"
after the layer that wrote them; a net input keeps its name, so every write
of an input blob is named after its layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import Layer


@dataclass(eq=False)
class BlobVersion:
    blob: str            # the blob's name in the net
    index: int           # 0 for its first value, then one more per write
    producer: int | None  # the index of the layer that wrote it; None: from outside
    position: int        # its position among the producer's tops
    in_place: bool       # its producer read the version before it at the same position
    name: str = ""       # unique among the net's values
    consumers: list[int] = field(default_factory=list)  # the layers that read it, in order


class BlobVersions:
    """Every version of every blob of `layers` (in run order), `inputs` first."""

    def __init__(self, layers: list[Layer], inputs=()):
        self.layers = layers
        self.inputs = set(inputs)
        self.versions: list[BlobVersion] = []  # in the order they are made
        self.of_blob: dict[str, list[BlobVersion]] = {}
        self.read: dict[tuple[int, int], BlobVersion] = {}     # (layer, bottom position) -> version
        self.written: dict[tuple[int, int], BlobVersion] = {}  # (layer, top position) -> version
        for name in inputs:
            self._add(name, None, 0, False)
        for index, layer in enumerate(layers):
            for position, bottom in enumerate(layer.bottoms):
                versions = self.of_blob.get(bottom) or [self._add(bottom, None, 0, False)]
                versions[-1].consumers.append(index)
                self.read[index, position] = versions[-1]
            for position, top in enumerate(layer.tops):
                in_place = position < len(layer.bottoms) and layer.bottoms[position] == top
                self.written[index, position] = self._add(top, index, position, in_place)
        for blob, versions in self.of_blob.items():
            for version in versions:
                final = version is versions[-1] and blob not in self.inputs
                version.name = blob if version.producer is None or final else \
                    f"{blob}:{layers[version.producer].name}"

    def _add(self, blob: str, producer: int | None, position: int, in_place: bool) -> BlobVersion:
        versions = self.of_blob.setdefault(blob, [])
        version = BlobVersion(blob, len(versions), producer, position, in_place)
        versions.append(version)
        self.versions.append(version)
        return version

    def final(self, blob: str) -> BlobVersion:
        """The blob's last version."""
        return self.of_blob[blob][-1]

    def last_writes(self) -> dict[str, int]:
        """Each blob a layer writes -> the index of its last writer (in the
        order the blobs are first written)."""
        return {version.blob: version.producer for version in self.versions
                if version.producer is not None}

    def last_reads(self) -> dict[str, int]:
        """Each blob read -> the index of its last reader (in the order the
        blobs are first read)."""
        return {version.blob: index for (index, _), version in self.read.items()}
