"""The fork-join engine protocol (DESIGN §5): limits, the controller that owns the whole step
protocol, the KV-slot manager, per-sequence seeds and the `Trajectory` record. Imports no torch,
so any engine (the reference decoder, the SGLang plugin, a fake one in tests) can drive it."""

from npr.forkjoin.controller import ForkJoinController
from npr.forkjoin.limits import Limits
from npr.forkjoin.output import final_prefix
from npr.forkjoin.seeds import derive_seed
from npr.forkjoin.slots import SlotCounter, SlotManager
from npr.forkjoin.state import (
    BranchEnd,
    EngineEvent,
    Finish,
    Fork,
    Join,
    Plan,
    Preempt,
    Prefilled,
    Request,
    Seq,
    SeqState,
    Work,
    WorkResult,
)
from npr.forkjoin.trajectory import Trajectory

__all__ = ["BranchEnd", "EngineEvent", "Finish", "Fork", "ForkJoinController", "Join", "Limits", "Plan", "Preempt",
           "Prefilled", "Request", "Seq", "SeqState", "SlotCounter", "SlotManager", "Trajectory", "Work", "WorkResult",
           "derive_seed", "final_prefix"]
