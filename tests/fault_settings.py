"""Settings of the worker subprocesses the fault tests start: the demo project's, plus the
STACKGAN overrides the test passes in FAULT_STACKGAN (lease length, queue, generator backend)."""

import json
import os

from config.settings import *  # noqa: F403
from config.settings import STACKGAN

STACKGAN = {**STACKGAN, **json.loads(os.environ.get("FAULT_STACKGAN", "{}"))}
