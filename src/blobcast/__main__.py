"""The `blobcast` command (also `python -m blobcast`).

SIGINT and SIGTERM are taken over before anything heavy is imported: a
signal during start-up ends the command with its one line and exit code,
never a traceback or a silent exit.
"""

import sys

from .stopping import Interrupted, install_stop_handlers, interruption, pause_point


def main() -> None:
    install_stop_handlers()
    try:
        pause_point("startup")
        from .cli import main as cli_main

        cli_main()
    except Interrupted:  # outside a command's own error handling (start-up, argument parsing)
        code, message = interruption()
        if "--json" in sys.argv[1:]:
            import json

            sys.stdout.write(json.dumps({"ok": False, "error": message, "exit_code": code}) + "\n")
        sys.stderr.write(f"blobcast: error: {message}\n")
        sys.exit(code)


if __name__ == "__main__":
    main()
