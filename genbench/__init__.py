"""genbench: GAN, VAE and DDPM trained and evaluated on identical setups."""

__version__ = "0.1.0"
