"""Test-only hooks: a worker that kills itself, the EMA store compared across ranks.

Nothing here runs in a normal training run. Tests switch the hooks on through
the environment of the process that starts a Ray run (the driver reads it with
:meth:`FaultHooks.from_env` and passes the hooks to the workers):

- ``S2L_TEST_FAULT="RANK:EPOCH:MARKER"`` (:data:`FAULT_ENV`): worker ``RANK``
  kills itself (SIGKILL) at the end of epoch ``EPOCH``, before reporting it,
  once: it creates ``MARKER`` first, and an existing ``MARKER`` disarms it.
- ``S2L_CHECK_STORE=1`` (:data:`CHECK_ENV`): at the end of every epoch the
  replicated EMA store's digest is compared across ranks (RuntimeError if
  they differ) and reported to Ray as ``store_digest``.

The loop (:func:`s2l_tools.training.engine.fit`) calls one hook,
:meth:`FaultHooks.epoch_end`, and only when its context carries hooks
(``Context.test_hooks``).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["FAULT_ENV", "CHECK_ENV", "FaultHooks", "check_same_store"]

#: "RANK:EPOCH:MARKER": worker RANK kills itself (SIGKILL) at the end of EPOCH, once.
FAULT_ENV = "S2L_TEST_FAULT"
#: "1": every epoch, compare the EMA store's digest across ranks and report it.
CHECK_ENV = "S2L_CHECK_STORE"


@dataclass
class FaultHooks:
    """The test hooks of one run (see the module docstring).

    Parameters
    ----------
    fault : str, optional
        ``"RANK:EPOCH:MARKER"``, see :data:`FAULT_ENV`.
    check_store : bool
        See :data:`CHECK_ENV`.
    """

    fault: str | None = None
    check_store: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FaultHooks | None:
        """The hooks the environment asks for; None when it asks for none."""
        env = os.environ if environ is None else environ
        hooks = cls(fault=env.get(FAULT_ENV) or None, check_store=env.get(CHECK_ENV) == "1")
        return hooks if hooks.fault or hooks.check_store else None

    @classmethod
    def from_dict(cls, d: dict | None) -> FaultHooks | None:
        return None if d is None else cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    def epoch_end(self, ctx, store, row: dict) -> dict:
        """Run the hooks after an epoch; return the metrics to report.

        Every rank calls it (the store check is a collective). ``row`` is not
        changed: ``store_digest`` goes into the returned copy only, not into
        the run's history.
        """
        metrics = row
        if self.check_store and not store.is_shard:
            metrics = {**row, "store_digest": check_same_store(ctx, store)}
        if self.fault:
            rank, epoch, marker = self.fault.split(":", 2)
            if ctx.rank == int(rank) and int(row["epoch"]) == int(epoch) \
                    and not os.path.exists(marker):
                Path(marker).touch()
                os.kill(os.getpid(), signal.SIGKILL)
        return metrics


def check_same_store(ctx, store) -> str:
    """The store's digest, after checking that every rank's store has the same.

    Raises
    ------
    RuntimeError
        The ranks' stores differ (their digests are named).
    """
    digest = store.digest()
    everyone = ctx.all_gather_bytes(bytes.fromhex(digest))
    if any(d != everyone[0] for d in everyone):
        raise RuntimeError("EMA store differs between ranks after sync: "
                           + ", ".join(d.hex()[:12] for d in everyone))
    return digest
