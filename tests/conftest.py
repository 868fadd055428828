"""Hypothesis profiles.

The default run (the README's test command, CI, any user's machine) replays a fixed,
derandomised set of examples with no example database, so it passes or fails the same way
everywhere. Exploring afresh is opt-in: ``JOINTOPT_HYPOTHESIS=explore`` (random seeds, the
local example database).
"""

import os

from hypothesis import settings

settings.register_profile("replay", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", print_blob=True)
_profile = os.environ.get("JOINTOPT_HYPOTHESIS", "replay")
if _profile not in ("replay", "explore"):
    raise RuntimeError(f"JOINTOPT_HYPOTHESIS must be replay or explore, got {_profile!r}")
settings.load_profile(_profile)
