"""Distributed execution of the optimizers on torch.distributed: DDP, FSDP2 / HSDP, ZeRO, DCP.

One code path, three modes, chosen from what the parameters are (``muonlab.distributed.modes``):
``local`` (plain tensors), ``replicated`` (plain tensors + ``process_group=``, i.e. DDP) and
``sharded`` (DTensor parameters from ``fully_shard``). The stages are the same in every mode; only
the stack context (``muonlab.distributed.contexts``) differs. See docs/distributed.md.
"""

from .comm import CommLog, record
from .modes import MODES
from .plan import assign_owners, ns_flops

__all__ = ["MODES", "CommLog", "assign_owners", "ns_flops", "record"]
