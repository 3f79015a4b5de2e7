"""The bundle's one program: ``c2c-playground``, or ``c2c`` / ``c2c-playground-install-desktop`` by the name it
is started as (the bundle links those names to it, so the three share one copy of torch and Qt)."""

import sys
from pathlib import Path


def main() -> int:
    name = Path(sys.argv[0]).name
    if name == "c2c":
        from fusers.cli import main as command
    elif name == "c2c-playground-install-desktop":
        from c2c_playground.desktop_entry import main as command
    else:
        from c2c_playground.main import main as command
    return command()


if __name__ == "__main__":
    sys.exit(main())
