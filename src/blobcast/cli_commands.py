"""What every command of the command line shares in how it is parsed and
shown: usage errors as one JSON object under --json, usage lines with the
arguments' plain names, and the default opset in --help found when shown.

The options themselves and the commands are in cli.py.
"""

from __future__ import annotations

import json
import sys

from typer import core as typer_core
from typer.core import TyperCommand, TyperGroup

usage: dict = {"json": False}  # whether the arguments being parsed ask for --json


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


# click's usage errors: newer typer releases carry their own copy of click
ClickError = (getattr(typer_core, "_click", None) or typer_core.click).exceptions.ClickException


def _json_usage_error(error) -> None:
    """Under --json a usage error (unknown option, missing argument, bad
    value) also prints the one JSON object a pipeline reads; click still
    prints the usage and the error on stderr."""
    if usage["json"] and not getattr(error, "json_printed", False):
        print_json({"ok": False, "error": error.format_message(), "exit_code": error.exit_code})
        error.json_printed = True


class ConventionGroup(TyperGroup):
    def make_context(self, info_name, args, parent=None, **extra):
        options = args[:args.index("--")] if "--" in args else args  # after "--" come file names
        usage["json"] = "--json" in options
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except ClickError as error:
            _json_usage_error(error)
            raise

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except ClickError as error:
            _json_usage_error(error)
            raise

    def invoke(self, ctx):
        try:  # "Missing command." is raised here
            return super().invoke(ctx)
        except ClickError as error:
            _json_usage_error(error)
            raise


class PlainCommand(TyperCommand):
    """Usage and argument lines with the arguments' plain names (`SOURCE`);
    some typer versions write `{SOURCE}` or `SOURCE <str>`. The default
    opset in --help is the installed onnx and onnxruntime's, found when the
    help is shown (importing onnx for every command would cost 0.3 s)."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except ClickError as error:
            _json_usage_error(error)
            raise

    def _argument_names(self, ctx) -> list[str]:
        return [param.metavar or param.name.upper() for param in self.get_params(ctx)
                if param.param_type_name == "argument"]

    def collect_usage_pieces(self, ctx) -> list[str]:
        return ([self.options_metavar] if self.options_metavar else []) + self._argument_names(ctx)

    def format_help(self, ctx, formatter) -> None:
        for param in self.params:  # before typer draws the help, plainly or with rich
            if DEFAULT_OPSET_MARK in (getattr(param, "help", None) or ""):
                param.help = param.help.replace(DEFAULT_OPSET_MARK, str(_default_opset()))
        inner = ctx.make_formatter()
        super().format_help(ctx, inner)
        text = inner.getvalue()
        for name in self._argument_names(ctx):
            text = text.replace(f"{name} <str>", f"{name}      ")
        formatter.write(text)


DEFAULT_OPSET_MARK = "{default_opset}"


def _default_opset() -> int:
    from .converters.onnx_format import DEFAULT_OPSET
    from .converters.onnx_versions import default_opset

    return default_opset(DEFAULT_OPSET)
