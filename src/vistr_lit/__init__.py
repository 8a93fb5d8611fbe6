"""vistr-lit: VisTR video instance segmentation with PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
