"""Deployment planning for V4-class models (`trillion plan`, docs/plan.md): memory per device, the
parallel layout, the largest batch, and decode / prefill / time-to-first-token rooflines on the
chips of `hardware.HARDWARE` or this CPU, checked against published serving figures (`published`)."""

from .costs import PRECISIONS, ModelCosts, costs_for, v3_costs, v4_costs
from .hardware import HARDWARE, Hardware, cpu_hardware, get_hardware
from .planner import Plan, PlanError, Request, plan

__all__ = [
    "HARDWARE",
    "PRECISIONS",
    "Hardware",
    "ModelCosts",
    "Plan",
    "PlanError",
    "Request",
    "costs_for",
    "cpu_hardware",
    "get_hardware",
    "plan",
    "v3_costs",
    "v4_costs",
]
