"""The `om-constants` console script: runs the tool bundled in the package."""

import os
import subprocess
import sys

from . import cli_path


def main() -> int:
    """Runs the bundled om-constants tool with this process's arguments."""
    tool = str(cli_path())
    if os.name == "posix":
        os.execv(tool, [tool, *sys.argv[1:]])
    return subprocess.call([tool, *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
