"""View sampling: splits by source, anchors with physics/instrument views, batch samplers."""

from whatsreal.sampling.splits import SPLITS, assign_split
from whatsreal.sampling.views import (
    ObservationDataset,
    SourceBatchSampler,
    SplitSpec,
    StepBatchSampler,
    StepIndexedViews,
    ViewDataset,
    collate_views,
    footprint_rows,
    sky_context_rows,
)

__all__ = [
    "SPLITS",
    "ObservationDataset",
    "SourceBatchSampler",
    "SplitSpec",
    "StepBatchSampler",
    "StepIndexedViews",
    "ViewDataset",
    "assign_split",
    "collate_views",
    "footprint_rows",
    "sky_context_rows",
]
