from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.steps.common import LayerSelection


class Cluster(LayerSelection):
    """Weight sharing: each layer's weights become indices into a small table of k-means centroids."""

    summary = ("k-means weight clustering (Deep Compression): each layer stores uint8 indices and a codebook, "
               "so the file shrinks about 4x; onnxruntime folds the lookup away when it loads the model.")
    formats = ("onnx", "pt2")
    step: Literal["cluster"] = "cluster"
    clusters: int = Field(16, ge=2, le=256, description="Centroids per layer.")
    min_size: int = Field(1024, ge=1, description="Layers with fewer weights are left alone.")
    iterations: int = Field(25, ge=1, le=200, description="k-means iterations.")
