"""Modular net files: Caffe prototxt plus module definitions and instances.

    module_separator: "/"            # how instance names qualify inner names (default ".")
    import: "blocks.prototxt"        # modules from another file, relative to this one
    module {
      name: "Inception"
      input: "x"  output: "out"      # the module's blobs bound to an instance's bottoms/tops
      param { name: "n1x1" }         # required; param { name: "stride" default: "1" }
      layer { name: "1x1" type: "Convolution" bottom: "x" top: "1x1"
              convolution_param { num_output: ${n1x1} kernel_size: 1 } }
      ...
    }
    layer { name: "inception_3a" module: "Inception" bottom: "pool2" top: "inception_3a"
            module_param { key: "n1x1" value: "64" }  share_weights: false }

Any prototxt is a modular file with no modules. Flattening follows Caffe's
order (phase rules first, then inlining): an instance's include/exclude rules
go to every layer it makes. Inside a module, layer and blob names are local
and become `<instance><separator><name>`; a name written with a `${...}`
parameter is taken as it comes out. Modules may instantiate other modules,
not themselves (a cycle is an error naming it).

Protobuf's text format cannot add fields to Caffe's messages, so the file is
split at its top level by the small scanner here, and every layer is read by
Caffe's own schema (prototxt.parse_text).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace

from google.protobuf import text_format

from blobcast.errors import FormatError
from blobcast.limits import check_allocation
from blobcast.model import Model
from blobcast.modules import ModuleInstance, share_parameters

_TOKEN = re.compile(r'\s+|#[^\n]*'                      # space, comments
                    r'|"[^"\\\n]*(?:\\.[^"\\\n]*)*"'    # strings (unrolled: linear, no per-character branch)
                    r"|'[^'\\\n]*(?:\\.[^'\\\n]*)*'"
                    r'|[{}\[\]<>:;,]'                    # punctuation
                    r'''|[^\s{}\[\]<>:;,"'#]+''')          # names, numbers, enums
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.+\-/ ]*$")  # what a parameter may be: no quotes, braces, comments
MAX_LAYERS = 200_000   # flattened layers and instances: nesting multiplies them
LAYER_BYTES = 6 * 2**10  # what one flattened layer costs once read (about 5.5 KiB measured)
MAX_VALUE_CHARS = 2**16  # a parameter's value: a name or a few numbers, not a way to grow text
MAX_DEPTH = 64         # modules inside modules
MODULE_FIELDS = ("name", "input", "output", "param", "layer", "share_weights")
INSTANCE_FIELDS = ("name", "module", "bottom", "top", "module_param", "share_weights", "include",
                   "exclude")


@dataclass
class Entry:
    """One field at some nesting level: a scalar token, or a message body's span."""

    name: str
    value: str | None
    body: tuple[int, int] | None
    start: int
    end: int


def _line(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def entries(text: str, start: int, end: int, path: str) -> list[Entry]:
    """The fields of the message text[start:end], bodies left unparsed."""
    found: list[Entry] = []
    tokens = _tokens(text, start, end, path)
    i = 0
    while i < len(tokens):
        name, name_start, _ = tokens[i]
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise FormatError(f"line {_line(text, name_start)}: expected a field name, found {name!r}",
                              path)
        i += 1
        if i < len(tokens) and tokens[i][0] == ":":
            i += 1
        if i >= len(tokens):
            raise FormatError(f"line {_line(text, name_start)}: field {name!r} has no value", path)
        token, token_start, token_end = tokens[i]
        if token in ("{", "<", "["):
            close = {"{": "}", "<": ">", "[": "]"}[token]
            depth, j = 0, i
            while j < len(tokens):
                if tokens[j][0] in ("{", "<", "["):
                    depth += 1
                elif tokens[j][0] in ("}", ">", "]"):
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if j >= len(tokens) or tokens[j][0] != close:
                raise FormatError(f"line {_line(text, token_start)}: {name!r} is not closed", path)
            if token == "[":
                found.append(Entry(name, text[token_start:tokens[j][2]], None, name_start, tokens[j][2]))
            else:
                found.append(Entry(name, None, (token_end, tokens[j][1]), name_start, tokens[j][2]))
            i = j + 1
        else:
            found.append(Entry(name, token, None, name_start, token_end))
            i += 1
        while i < len(tokens) and tokens[i][0] in (";", ","):
            i += 1
    return found


def _tokens(text: str, start: int, end: int, path: str) -> list[tuple[str, int, int]]:
    out, position = [], start
    while position < end:
        match = _TOKEN.match(text, position, end)
        if match is None:
            raise FormatError(f"line {_line(text, position)}: cannot read {text[position:position + 20]!r}",
                              path)
        token = match.group()
        if not token.isspace() and not token.startswith("#"):
            out.append((token, match.start(), match.end()))
        position = match.end()
    return out


def _string(entry: Entry, text: str, path: str, what: str) -> str:
    if entry.value is None or entry.value[:1] not in "\"'":
        raise FormatError(f"line {_line(text, entry.start)}: {what} must be a quoted string", path)
    return text_format.Tokenizer(iter([entry.value])).ConsumeString()


def _bool(entry: Entry, text: str, path: str) -> bool:
    if entry.value not in ("true", "false", "True", "False", "1", "0"):
        raise FormatError(f"line {_line(text, entry.start)}: {entry.name} must be true or false", path)
    return entry.value in ("true", "True", "1")


@dataclass
class ModuleDef:
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[str, str | None]       # name -> default (None: required)
    body: str                           # the layers' text, parameters not yet substituted
    share_weights: bool
    where: str                          # the file that defines it


@dataclass
class InstanceSpec:
    name: str
    module: str
    bottoms: list[str]
    tops: list[str]
    params: dict[str, str]
    share_weights: bool | None
    rules: str                          # include/exclude text, as written


def instance_spec(text: str, entry: Entry, path: str) -> InstanceSpec:
    fields = entries(text, *entry.body, path)
    unknown = [f.name for f in fields if f.name not in INSTANCE_FIELDS]
    spec = InstanceSpec("", "", [], [], {}, None, "")
    if unknown:
        raise FormatError(f"line {_line(text, entry.start)}: a module instance takes "
                          f"{', '.join(INSTANCE_FIELDS)}; not {unknown[0]!r}", path)
    for f in fields:
        if f.name == "name":
            spec.name = _string(f, text, path, "name")
        elif f.name == "module":
            spec.module = _string(f, text, path, "module")
        elif f.name in ("bottom", "top"):
            (spec.bottoms if f.name == "bottom" else spec.tops).append(_string(f, text, path, f.name))
        elif f.name == "share_weights":
            spec.share_weights = _bool(f, text, path)
        elif f.name in ("include", "exclude"):
            spec.rules += f" {text[f.start:f.end]}"
        else:  # module_param
            pair = {p.name: p for p in entries(text, *f.body, path)} if f.body else {}
            if set(pair) != {"key", "value"}:
                raise FormatError(f"line {_line(text, f.start)}: module_param takes key and value",
                                  path)
            key = _string(pair["key"], text, path, "key")
            value = pair["value"].value or ""
            value = _string(pair["value"], text, path, "value") if value[:1] in "\"'" else value
            spec.params[key] = value
    if not spec.name:
        raise FormatError(f"line {_line(text, entry.start)}: a module instance needs a name", path)
    return spec


def is_instance(text: str, entry: Entry, path: str) -> bool:
    return entry.name == "layer" and entry.body is not None and any(
        f.name == "module" for f in entries(text, *entry.body, path))


@dataclass
class ModularFile:
    """What a modular file holds: its modules (imports resolved), the
    net-level text and its layers in order (text spans or instances)."""

    path: str
    text: str
    separator: str = "."
    modules: dict[str, ModuleDef] = field(default_factory=dict)
    net_text: str = ""
    items: list = field(default_factory=list)  # ("layer", text) | ("instance", InstanceSpec)
    text_bytes: int = 0  # of the file and its imports, held at once


def modular_entries(text: str) -> list[Entry] | None:
    """The top-level fields of a prototxt that uses anything beyond Caffe's
    schema (a module, an import, a separator, a layer that instantiates a
    module), else None. A Python layer's python_param { module } is Caffe's own."""
    if not re.search(r"\b(module|import|module_separator)\s*[:{]", text):
        return None  # the quick look: most nets
    try:
        top = entries(text, 0, len(text), "")
    except FormatError:
        return None  # Caffe's parser names the syntax error
    modular = any(entry.name in ("module", "import", "module_separator")
                  or is_instance(text, entry, "") for entry in top)
    return top if modular else None


def parse_file(path: str, text: str, read_text, top: list[Entry] | None = None) -> ModularFile:
    """Split a modular file (`top`: its fields, when already scanned); read its
    imports (relative to it, inside its folder tree)."""
    result = ModularFile(path, text, text_bytes=len(text))
    root = os.path.dirname(os.path.realpath(path))
    _collect(result, path, text, read_text, root, {os.path.realpath(path)}, top=True, found=top)
    return result


def _collect(result: ModularFile, path: str, text: str, read_text, root: str, seen: set,
             top: bool, found: list[Entry] | None = None) -> None:
    net_parts = []
    for entry in found if found is not None else entries(text, 0, len(text), path):
        if entry.name == "module" and entry.body is not None:
            definition = _module_def(text, entry, path)
            if definition.name in result.modules:
                raise FormatError(f"module {definition.name!r} is defined twice (also in "
                                  f"{result.modules[definition.name].where})", path)
            result.modules[definition.name] = definition
        elif entry.name == "import":
            _import(result, path, _string(entry, text, path, "import"), read_text, root, seen)
        elif entry.name == "module_separator":
            separator = _string(entry, text, path, "module_separator")
            if not separator or any(c in separator for c in "\"'{}#\n\\") or separator != separator.strip():
                raise FormatError(f"module_separator {separator!r} cannot be part of a name", path)
            result.separator = separator
        elif not top:
            raise FormatError(f"line {_line(text, entry.start)}: an imported file holds modules and "
                              f"imports only, not {entry.name!r}", path)
        elif entry.name in ("layer", "layers"):
            if is_instance(text, entry, path):
                result.items.append(("instance", instance_spec(text, entry, path)))
            else:
                result.items.append(("layer", text[entry.start:entry.end]))
        else:
            net_parts.append(text[entry.start:entry.end])
    if top:
        result.net_text = "\n".join(net_parts)


def _import(result: ModularFile, path: str, name: str, read_text, root: str, seen: set) -> None:
    target = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(path)), name))
    if os.path.commonpath([root, target]) != root:
        raise FormatError(f"import {name!r} leads outside the folder of the net file", path)
    if target in seen:
        return  # imported once already (or the file itself)
    seen.add(target)
    text = read_text(target)
    result.text_bytes += len(text)  # each file is checked on reading; all of them together too
    check_allocation(result.text_bytes, "the net file and its imports", path)
    _collect(result, target, text, read_text, root, seen, top=False)


def _module_def(text: str, entry: Entry, path: str) -> ModuleDef:
    definition = ModuleDef("", [], [], {}, "", False, path)
    body_parts = []
    for f in entries(text, *entry.body, path):
        if f.name not in MODULE_FIELDS:
            raise FormatError(f"line {_line(text, f.start)}: a module takes "
                              f"{', '.join(MODULE_FIELDS)}; not {f.name!r}", path)
        if f.name == "name":
            definition.name = _string(f, text, path, "name")
        elif f.name in ("input", "output"):
            (definition.inputs if f.name == "input" else definition.outputs).append(
                _string(f, text, path, f.name))
        elif f.name == "share_weights":
            definition.share_weights = _bool(f, text, path)
        elif f.name == "param":
            fields = {p.name: p for p in entries(text, *f.body, path)} if f.body else {}
            if "name" not in fields or set(fields) - {"name", "default"}:
                raise FormatError(f"line {_line(text, f.start)}: param takes name and default", path)
            default = fields.get("default")
            value = None
            if default is not None:
                value = (_string(default, text, path, "default") if (default.value or "")[:1] in "\"'"
                         else default.value)
            definition.params[_string(fields["name"], text, path, "name")] = value
        else:
            body_parts.append(text[f.start:f.end])
    if not definition.name:
        raise FormatError(f"line {_line(text, entry.start)}: a module needs a name", path)
    definition.body = "\n".join(body_parts)
    return definition


# -- flattening -------------------------------------------------------------------------

class _Flattener:
    def __init__(self, modular: ModularFile, parse_text):
        self.modular, self.parse_text = modular, parse_text
        self.path, self.separator = modular.path, modular.separator
        self.layers: list = []           # (LayerParameter, module path, sharing key or None)
        self.instances: dict[str, ModuleInstance] = {}
        self.text_bytes = modular.text_bytes  # the files, plus every module body substituted
        self._parsed: dict[str, list] = {}     # layer text -> its parsed layers
        self._scans: dict[tuple, list] = {}    # (module body, file) -> its fields
        self._templated: dict[str, set] = {}   # module -> its strings that use a parameter

    def charge(self, pieces: int, text_bytes: int = 0) -> None:
        """Refuse before building past the limit on layers and instances, or
        past the memory budget (each layer's cost plus the text substituted)."""
        if pieces > MAX_LAYERS:
            raise FormatError(f"the net flattens to more than {MAX_LAYERS} layers and module "
                              "instances", self.path)
        self.text_bytes += text_bytes
        check_allocation(min(pieces, MAX_LAYERS + 1) * LAYER_BYTES + self.text_bytes,
                         f"flattening the modules ({pieces} layers and instances)", self.path)

    def qualify(self, instance: str, local: str) -> str:
        return f"{instance}{self.separator}{local}"

    def add(self, layer, module_path: tuple, share_key: str | None) -> None:
        self.layers.append((layer, module_path, share_key))

    def pieces(self) -> int:
        return len(self.layers) + len(self.instances)

    def layer_text(self, text: str, where: str):
        """The layers of one layer's text: parsed once per distinct text (every
        instance of a module repeats its layers), copied for each use."""
        parsed = self._parsed.get(text)
        if parsed is None:
            net = self.parse_text(text, where)
            if len(net.layers):
                raise FormatError("a modular net is written with V2 'layer' fields, not V1 'layers'", where)
            parsed = self._parsed[text] = list(net.layer)
        copies = []
        for template in parsed:
            copy = type(template)()
            copy.CopyFrom(template)
            copies.append(copy)
        return copies

    def scan(self, body: str, where: str) -> list:
        """A module body's fields, each an InstanceSpec or a layer's text:
        scanned once per distinct substituted body."""
        found = self._scans.get((body, where))
        if found is None:
            found = self._scans[(body, where)] = [
                instance_spec(body, entry, where) if is_instance(body, entry, where)
                else body[entry.start:entry.end] for entry in entries(body, 0, len(body), where)]
        return found

    def estimate(self, module: str, seen: tuple = ()) -> int:
        """Layers and instances one instance of `module` flattens to (itself
        included), counted from the text before anything is parsed (a module
        named by a parameter counts as one; expanding counts again as it goes)."""
        if module in self._counts:
            return self._counts[module]
        definition = self.modular.modules.get(module)
        if definition is None or module in seen:
            return 1  # reported properly when expanded
        total = 1
        for entry in entries(definition.body, 0, len(definition.body), definition.where):
            inner = next((f for f in entries(definition.body, *entry.body, definition.where)
                          if f.name == "module"), None) if entry.body else None
            if inner is None or "${" in (inner.value or ""):
                total += 1
            else:
                name = _string(inner, definition.body, definition.where, "module")
                total += self.estimate(name, seen + (module,))
            if total > MAX_LAYERS:
                break
        self._counts[module] = total
        return total

    def run(self):
        self._counts: dict[str, int] = {}
        planned = 0
        for kind, item in self.modular.items:
            planned += 1 if kind == "layer" else self.estimate(item.module)
            if planned > MAX_LAYERS:
                break
        self.charge(planned)
        for kind, item in self.modular.items:
            if kind == "layer":
                for layer in self.layer_text(item, self.path):
                    self.add(layer, (), None)
            else:
                self.expand(item, None, (), "", [])
        return self.layers, self.instances

    def expand(self, spec: InstanceSpec, parent: str | None, module_path: tuple, outer_rules: str,
               stack: list[str], shared_as: str | None = None) -> None:
        """Inline one instance. `shared_as`: the sharing name of an instance
        inside a shared one (its layers share with that instance's in others)."""
        who = f"instance {spec.name!r}"
        module = self.modular.modules.get(spec.module)
        if module is None:
            known = ", ".join(sorted(self.modular.modules)) or "none are defined"
            raise FormatError(f"{who}: unknown module {spec.module!r} (modules: {known})", self.path)
        if spec.module in stack:
            raise FormatError(f"{who}: module cycle {' -> '.join(stack + [spec.module])}", self.path)
        if len(stack) >= MAX_DEPTH:
            raise FormatError(f"{who}: modules nest more than {MAX_DEPTH} deep", self.path)
        who = f"instance {spec.name!r} of module {module.name!r}"
        if len(spec.bottoms) != len(module.inputs) or len(spec.tops) != len(module.outputs):
            raise FormatError(f"{who}: the module takes {len(module.inputs)} bottom(s) and "
                              f"{len(module.outputs)} top(s), the instance gives {len(spec.bottoms)} "
                              f"and {len(spec.tops)}", self.path)
        params = self.parameters(spec, module, who)
        if spec.name in self.instances:
            raise FormatError(f"{who}: another instance has the same name", self.path)
        share = module.share_weights if spec.share_weights is None else spec.share_weights
        share = share or shared_as is not None
        share_key = shared_as or module.name
        self.charge(self.pieces() + 1)
        self.instances[spec.name] = ModuleInstance(spec.name, module.name, params, list(spec.bottoms),
                                                   list(spec.tops), parent, share)
        rules = (outer_rules + spec.rules).strip()
        if outer_rules.strip() and spec.rules.strip():
            raise FormatError(f"{who}: has phase rules inside an instance that has its own", self.path)
        body, absolute, fill = self.substitute(module, params, who)
        bound = dict(zip(map(fill, module.inputs), spec.bottoms)) | dict(
            zip(map(fill, module.outputs), spec.tops))

        def blob(local: str) -> str:
            return bound.get(local) or (local if local in absolute else self.qualify(spec.name, local))

        def named(local: str) -> str:
            return local if local in absolute else self.qualify(spec.name, local)

        inner_path = module_path + (spec.name,)
        for item in self.scan(body, module.where):
            if isinstance(item, InstanceSpec):
                nested = replace(item, bottoms=list(item.bottoms), tops=list(item.tops),
                                 params=dict(item.params))
                local = nested.name
                nested.name = named(local)
                nested.bottoms = [blob(b) for b in nested.bottoms]
                nested.tops = [blob(t) for t in nested.tops]
                self.expand(nested, spec.name, inner_path, rules, stack + [spec.module],
                            self.qualify(share_key, local) if share else None)
                continue
            self.charge(self.pieces() + 1)
            for layer in self.layer_text(item, module.where):
                local = layer.name
                layer.name = named(local)
                bottoms, tops = [blob(b) for b in layer.bottom], [blob(t) for t in layer.top]
                del layer.bottom[:], layer.top[:]
                layer.bottom.extend(bottoms)
                layer.top.extend(tops)
                if rules:
                    if len(layer.include) or len(layer.exclude):
                        raise FormatError(f"{who}: layer {local!r} has phase rules inside an "
                                          "instance that has its own", self.path)
                    text_format.Merge(rules, layer)
                self.add(layer, inner_path, self.qualify(share_key, local) if share else None)

    def parameters(self, spec: InstanceSpec, module: ModuleDef, who: str) -> dict[str, str]:
        unknown = [key for key in spec.params if key not in module.params]
        if unknown:
            takes = ", ".join(module.params) or "no parameters"
            raise FormatError(f"{who}: unknown parameter {unknown[0]!r} (it takes {takes})", self.path)
        params = {}
        for name, default in module.params.items():
            value = spec.params.get(name, default)
            if value is None:
                raise FormatError(f"{who}: parameter {name!r} is not given", self.path)
            if len(value) > MAX_VALUE_CHARS:
                raise FormatError(f"{who}: parameter {name!r} is {len(value)} characters long, over "
                                  f"{MAX_VALUE_CHARS}", self.path)
            if not _SAFE_VALUE.match(value):
                raise FormatError(f"{who}: parameter {name!r} = {value!r} may hold only letters, "
                                  "digits, spaces and _ . + - /", self.path)
            params[name] = value
        return params

    def substitute(self, module: ModuleDef, params: dict, who: str):
        """The module's text with its parameters' values, the names that used
        a parameter (taken as they come out, not qualified), and the
        substitution itself for the module's input and output names."""
        def value(match):
            if match.group(1) not in params:
                raise FormatError(f"module {module.name!r} uses ${{{match.group(1)}}}, which is not "
                                  "one of its parameters", module.where)
            return params[match.group(1)]

        def fill(text: str) -> str:
            return _PLACEHOLDER.sub(value, text)

        # sized before it is built: a value that repeats ${v} doubles at every level
        grown = sum(len(value(match)) - len(match.group()) for match in _PLACEHOLDER.finditer(module.body))
        self.charge(self.pieces(), len(module.body) + grown)

        templated = self._templated.get(module.name)
        if templated is None:  # the body's quoted strings that use a parameter, found once a module
            templated = self._templated[module.name] = {
                token for token, _, _ in _tokens(module.body, 0, len(module.body), module.where)
                if token[:1] in "\"'" and "${" in token}
        absolute = {text_format.Tokenizer(iter([fill(token)])).ConsumeString() for token in templated}
        absolute |= {fill(name) for name in module.inputs + module.outputs if "${" in name}
        return fill(module.body), absolute, fill


def flatten(modular: ModularFile, parse_text, model_from_net, upgrade_net) -> Model:
    """The plain net a modular file describes, each layer with its module path."""
    layers, instances = _Flattener(modular, parse_text).run()
    net = parse_text(modular.net_text, modular.path)
    if len(net.layer) or len(net.layers):
        raise FormatError("layers must be top-level fields", modular.path)
    for layer, _, _ in layers:
        net.layer.append(layer)
    notes: list[str] = []
    blobs = upgrade_net(net, [], [[] for _ in net.layer], notes)
    model = model_from_net(net, blobs, source_format="prototxt", source_version="V2", notes=notes,
                           path=modular.path)
    offset = len(model.layers) - len(layers)  # an Input layer the upgrade put first
    for layer, (_, module_path, share_key) in zip(model.layers[offset:], layers):
        layer.module_path = module_path
        if share_key is not None:
            share_parameters(layer, share_key, modular.separator)
    model.modules = instances
    return model
