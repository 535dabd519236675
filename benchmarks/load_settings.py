"""Settings of the site benchmarks/load.py starts: the demo project's, with the API's per-key rate
limit for image requests lifted, since the benchmark measures the queue and the workers, not the
throttle (which answers 429 to a client sending 500 requests at once, as it should)."""

from config.settings import *  # noqa: F403
from config.settings import STACKGAN

STACKGAN = {**STACKGAN, "API_THROTTLE_RATES": {"assets": "100000/minute", "files": "100000/minute",
                                               "requests": "100000/minute", "verify": "100000/minute",
                                               "anonymous": "100000/minute"}}
