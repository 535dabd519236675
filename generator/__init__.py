"""StackGAN++ (StackGAN-v1 and StackGAN-v2) in PyTorch: networks, text encoder, data, training and inference.

This package knows nothing of Django or of the policy engine; it imports torch, transformers,
Pillow and numpy only.
"""

from generator.checkpoint import CheckpointError
from generator.config import StackGANConfig
from generator.pipeline import GeneratedImage, PipelineOutput, StackGANPipeline

__all__ = [
    "CheckpointError",
    "GeneratedImage",
    "PipelineOutput",
    "StackGANConfig",
    "StackGANPipeline",
]
