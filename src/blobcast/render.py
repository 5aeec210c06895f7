"""Rich trees for `blobcast inspect`, drawn from the facts in inspection.py."""

from __future__ import annotations

from rich.tree import Tree

from .display import safe as escape


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def _shape(facts: dict) -> str:
    return "[" + ", ".join(str(d) for d in facts["shape"]) + "]"


def _stats(facts: dict) -> str:
    stats = facts.get("stats")
    if not stats:
        return ""
    if stats["min"] is None:
        text = " [dim]no finite values[/dim]"
    else:
        text = (f" [dim]min {stats['min']:.4g} max {stats['max']:.4g} mean {stats['mean']:.4g} "
                f"std {stats['std']:.4g}[/dim]")
    if stats["nan"] or stats["inf"]:
        text += f" [bold red]NaN {stats['nan']} Inf {stats['inf']}[/bold red]"
    return text


def _tensor_line(label: str, facts: dict) -> str:
    return (f"{escape(label)} {_shape(facts)} {escape(facts['dtype'])} {_size(facts['bytes'])}"
            + _stats(facts))


def _settings(settings: dict) -> str:
    if not settings:
        return ""
    parts = []
    for key, value in settings.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) and set(v) <= {"dim"}
                                                     for v in value):
            value = [v.get("dim", []) for v in value]  # BlobShape messages as dim lists
        elif isinstance(value, dict) and set(value) <= {"dim"}:
            value = value.get("dim", [])
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        parts.append(f"{key}={value}")
    return " [dim]" + escape(", ".join(parts)) + "[/dim]"


def _render_layers(root: Tree, facts: dict) -> None:
    layers = root.add(f"layers ({facts['totals']['layers']})")
    for layer in facts["layers"]:
        flow = ""
        if layer["bottoms"] or layer["tops"]:
            flow = f" {escape(', '.join(layer['bottoms']))} -> {escape(', '.join(layer['tops']))}"
        kind = layer["type"] or "?"
        rules = f" [magenta]({escape(layer['rules'])})[/magenta]" if layer.get("rules") else ""
        node = layers.add(f"[bold]{escape(layer['name'])}[/bold] [cyan]{escape(kind)}[/cyan]"
                          f"{flow}{_settings(layer['settings'])}{rules}")
        for blob in layer["blobs"]:
            if blob.get("absent"):
                node.add(f"{blob['index']} [dim](absent: stored under the owner of a shared "
                         "parameter)[/dim]")
                continue
            line = _tensor_line(str(blob["index"]), blob)
            if "shared_with" in blob:
                line += f" [yellow]shared with {escape(blob['shared_with'])}[/yellow]"
            if not blob["learnable"]:
                line += " [dim](lr_mult 0)[/dim]"
            child = node.add(line)
            if "diff" in blob:
                child.add(_tensor_line("diff", blob["diff"]))


def _instance_line(node: dict) -> str:
    params = ", ".join(f"{k}={v}" for k, v in node["params"].items())
    shared = " [yellow]shared weights[/yellow]" if node.get("share_weights") else ""
    return (f"[bold]{escape(node['name'])}[/bold] [green]{escape(node['module'])}[/green]"
            f"[dim]({escape(params)})[/dim] {escape(', '.join(node['bottoms']))} -> "
            f"{escape(', '.join(node['tops']))}: {node['layers']} layers, "
            f"{node['parameters']:,} parameters{shared}")


def _render_instance(parent: Tree, node: dict) -> None:
    branch = parent.add(_instance_line(node))
    for child in node["children"]:
        _render_instance(branch, child)


def _render_modules(root: Tree, view: dict) -> None:
    summary = ", ".join(f"{escape(m['module'])} x{len(m['instances'])}" for m in view["modules"])
    items = root.add(f"modules ({summary or 'none found'})")
    for item in view["view"]:
        if item["kind"] == "instance":
            _render_instance(items, item)
        else:
            flow = f" {escape(', '.join(item['bottoms']))} -> {escape(', '.join(item['tops']))}"
            items.add(f"[bold]{escape(item['name'])}[/bold] [cyan]{escape(item['type'])}[/cyan]{flow}")


def render_model(facts: dict) -> Tree:
    version = f", Caffe {escape(facts['caffe_version'])}" if facts.get("caffe_version") else ""
    name = escape(facts["name"] or "(unnamed net)")
    root = Tree(f"[bold]{name}[/bold] ({facts['format']}{version}) {escape(facts['path'])}")
    if facts["inputs"]:
        inputs = root.add("inputs")
        for blob, shape in facts["inputs"].items():
            inputs.add(f"{escape(blob)} {shape if shape is not None else '(shape unset)'}")
    if facts.get("module_view") is not None:
        _render_modules(root, facts["module_view"])
    else:
        _render_layers(root, facts)
    _render_deploy(root, facts.get("runs"))
    _render_unknown(root, facts.get("unknown_fields"))
    _render_target(root, facts.get("target"))
    _render_training(root, facts.get("training"))
    totals = facts["totals"]
    root.add(f"totals: {totals['layers']} layers, {totals['tensors']} tensors "
             f"({totals['learnable_tensors']} learnable, {totals['state_tensors']} state), "
             f"{totals['parameters']:,} parameters, {_size(totals['bytes'])}")
    for note in facts.get("notes", []):
        root.add(f"[dim]note: {escape(note)}[/dim]")
    return root


def _unknown_line(entry: dict) -> str:
    place = f"layer {entry['layer']!r}" if entry["layer"] is not None else "net"
    if entry.get("where"):
        place += f" {entry['where']}"
    if "name" in entry:
        return f"{place}: {entry['name']} (text, kept)"
    number = entry["number"] if entry["number"] is not None else "?"
    return f"{place}: field {number}, {entry['wire_type']}, {_size(entry['bytes'])} (kept)"


def _render_unknown(root: Tree, entries: list[dict] | None) -> None:
    """Fields the schema does not know: kept and written back, shown here."""
    if not entries:
        return
    branch = root.add(f"fields unknown to the schema ({len(entries)})")
    for entry in entries:
        branch.add(escape(_unknown_line(entry)))


def _render_deploy(root: Tree, runs: dict | None) -> None:
    if not runs:
        return
    if "error" in runs:
        root.add(f"[dim]runs: the {runs['phase']} phase cannot run: {escape(runs['error'])}[/dim]")
        return
    inputs = ", ".join(f"{escape(name)} {shape if shape is not None else '(shape unset: give --input)'}"
                       for name, shape in runs["inputs"].items())
    node = root.add(f"runs: the {runs['phase']} phase, {runs['layers']} layers: {inputs or 'no inputs'}"
                    f" -> {escape(', '.join(runs['outputs']))}")
    if runs["not_run"]:
        node.add(f"[dim]not run: {escape(', '.join(runs['not_run']))}[/dim]")
    if runs.get("cannot_run"):
        node.add(f"[yellow]the engine cannot run: {escape(', '.join(runs['cannot_run']))}[/yellow]")
    if runs["dropped_inputs"]:
        node.add(f"[dim]not inputs (read only by layers not run): "
                 f"{escape(', '.join(runs['dropped_inputs']))}[/dim]")


def _render_target(root: Tree, target: dict | None) -> None:
    if not target:
        return
    if target["fits"]:
        root.add(f"[green]fits {escape(target['name'])}[/green] ({escape(target['description'])})")
        return
    node = root.add(f"[red]does not fit {escape(target['name'])}[/red] "
                    f"({escape(target['description'])}): {len(target['problems'])} problem(s)")
    for problem in target["problems"]:
        node.add(escape(problem))


def _render_solver(root: Tree, settings: dict) -> None:
    solver = root.add(f"solver {escape(str(settings.get('type')))}")
    for key, value in settings.items():
        if key != "type":
            solver.add(f"{escape(key)} = {escape(value)}")


def _render_history(root: Tree, facts: dict) -> None:
    label = f"history ({facts['history_count']} tensors"
    if facts.get("solver_type"):
        label += f", {escape(facts['solver_type'])}"
    history = root.add(label + ")")
    for group in facts["history"]:
        if "tensors" in group:
            node = history.add(f"[bold]{escape(group['layer'])}[/bold] blob {group['blob']}")
            for tensor in group["tensors"]:
                node.add(_tensor_line(f"#{tensor['index']} {tensor['role']}", tensor))
        else:
            history.add(_tensor_line(f"#{group['index']}", group))


def _render_training(root: Tree, training: dict | None) -> None:
    if not training:
        return
    node = root.add(f"training: {escape(training['solver_type'])}, iteration {training['iter']}, "
                    f"current step {training['current_step']}, learned_net "
                    f"{escape(training['learned_net'] or '(none)')}")
    _render_solver(node, training["solver"])
    node.add(f"[dim]update in ONNX: {escape(training['update'])}[/dim]")
    _render_history(node, training)


def render_state(facts: dict) -> Tree:
    root = Tree(f"[bold]solver state[/bold] ({facts['format']}) {escape(facts['path'])}")
    root.add(f"iteration {facts['iter']}, current step {facts['current_step']}")
    found = facts["learned_net_found"]
    where = (f"[green]found at {escape(found)}[/green]" if found else
             "[red]missing[/red] (tried " + escape(", ".join(facts["learned_net_tried"])) + ")")
    root.add(f"learned_net {escape(facts['learned_net'] or '(none)')}: {where}")
    if facts.get("solver"):
        _render_solver(root, facts["solver"])
    _render_history(root, facts)
    for note in facts.get("notes", []) + ([facts["note"]] if facts.get("note") else []):
        root.add(f"[dim]note: {escape(note)}[/dim]")
    return root


def render_hdf5(entries: list[dict]) -> Tree:
    root = Tree("HDF5 layout")
    nodes = {"": root}
    for entry in sorted(entries, key=lambda e: e["path"]):
        parent_path, _, name = entry["path"].rpartition("/")
        parent = nodes.get(parent_path.lstrip("/"), root)
        if entry["kind"] == "group":
            nodes[entry["path"].lstrip("/")] = parent.add(f"{escape(name)}/")
        elif entry["kind"] == "dataset":
            extra = " gzip" if entry.get("compression") == "gzip" else ""
            parent.add(f"{escape(name)} {entry['shape']} {escape(entry['dtype'])}{extra}")
        elif entry["kind"] == "link":  # listed, never followed
            parent.add(f"{escape(name)} -> {escape(entry.get('target', ''))} [dim](link)[/dim]")
        else:
            parent.add(f"{escape(name)} [dim](not a group or dataset)[/dim]")
    return root


def render(facts: dict):
    from rich.console import Group

    if facts["kind"] == "onnx":
        from .render_onnx import render_onnx

        return render_onnx(facts)
    main = render_state(facts) if facts["kind"] == "solver_state" else render_model(facts)
    if "onnx" in facts:
        from .render_onnx import add_caffe_form, add_onnx_branch, add_rewrites

        add_onnx_branch(main, facts["onnx"])
        add_caffe_form(main, facts["caffe"])
        add_rewrites(main, facts.get("target"))
    if "hdf5" in facts:
        return Group(main, render_hdf5(facts["hdf5"]))
    return main
