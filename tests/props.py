"""Hypothesis profiles for the property-based tests (tests/test_properties_*.py), chosen by
``FETCHER_HYPOTHESIS_PROFILE``:

- ``ci`` (the default): 150 generated cases per test, a few seconds per boundary, so CI stays fast;
- ``deep``: 2,000 cases per test (about a minute per boundary file, on a quiet core);
- ``long``: 20,000 cases per test, for hunting (docs/testing.md gives the command; about 3 minutes a test);
- ``smoke``: 10 cases, to check the tests themselves run.

No deadline: a loaded CI machine must not turn a slow case into a failure. Each crash found
gets a hand-written regression test beside the property (named ``test_found_...``).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                                         HealthCheck.function_scoped_fixture]}
settings.register_profile("ci", max_examples=150, **_COMMON)
settings.register_profile("deep", max_examples=2_000, **_COMMON)
settings.register_profile("long", max_examples=20_000, **_COMMON)
settings.register_profile("smoke", max_examples=10, **_COMMON)
PROFILE = os.environ.get("FETCHER_HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
