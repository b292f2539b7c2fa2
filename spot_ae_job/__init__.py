"""Spot-AE: Apache Spot's flow pipeline with an autoencoder in place of LDA."""

__version__ = "0.1.0"
