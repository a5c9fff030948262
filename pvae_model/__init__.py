"""pvae_model: the Partitioned VAE (Hsu & Glass, 2018), its baselines and evaluation."""

__version__ = "0.1.0"
