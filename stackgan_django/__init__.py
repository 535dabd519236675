"""stackgan_django: governed text-to-image generation for Django sites."""

__version__ = "0.1.0"
