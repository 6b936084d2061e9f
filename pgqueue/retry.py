"""The retry policy: a pure function from an attempt's outcome to a decision.

One rule for every way an attempt ends without success: a task that raised (the worker
calls `decide` when it records the attempt) and a worker that died holding the job (the
rescuer in `pgqueue.maintenance` calls it with the job's rescue count). SQL only applies
the decision; this module never touches the database, so the policy is tested on its own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DEFAULT_BACKOFF_BASE = 2.0  # seconds before the second attempt
DEFAULT_BACKOFF_MAX = 600.0  # never wait more than ten minutes between attempts
DEFAULT_JITTER = 0.25  # +/- 25 %, so a burst of failures does not retry in lockstep
# A job whose worker died this many times is a poison job (it kills its worker): fail it.
MAX_RESCUES = 5


@dataclass(frozen=True)
class Backoff:
    base: float = DEFAULT_BACKOFF_BASE
    maximum: float = DEFAULT_BACKOFF_MAX
    jitter: float = DEFAULT_JITTER

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        exact = float(min(self.maximum, self.base * 2.0 ** max(0, attempt - 1)))
        spread = exact * self.jitter
        draw = float((rng or random).uniform(-spread, spread))
        return max(0.0, min(self.maximum, exact + draw))


@dataclass(frozen=True)
class Decision:
    retry: bool
    delay: float = 0.0


def decide(attempt: int, max_attempts: int, backoff: Backoff, *, retryable: bool = True,
           rescues: int = 0, max_rescues: int = MAX_RESCUES,
           rng: random.Random | None = None) -> Decision:
    """Retry after a delay, or give up (the job fails for good).

    `rescues` counts the times this job's worker died under it, this one included; a
    rescued attempt counts as an attempt too.
    """
    if not retryable or attempt >= max_attempts or rescues >= max_rescues:
        return Decision(retry=False)
    return Decision(retry=True, delay=backoff.delay(attempt, rng))
