"""The README's examples, run as a user would: the same program under asyncio and under trio."""

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import needs_root

EXAMPLES = Path(__file__).parent.parent / "examples"


@needs_root
@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_run_api_example_under_each_loop(loop: str) -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / "run_api.py"), loop], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "hello: exited with code 0" in lines
    assert lines[-1] == "sleeper: killed by SIGKILL"
