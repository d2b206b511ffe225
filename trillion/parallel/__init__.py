"""Parallel layouts of a V4 model over devices: which meshes are valid (`layout`), shared by the
deployment planner (`trillion plan`) and the distributed engine. Pure arithmetic on the config: no
torch.distributed here, so it can be imported anywhere."""

from .layout import LayoutError, check_layout, require_layout

__all__ = ["LayoutError", "check_layout", "require_layout"]
