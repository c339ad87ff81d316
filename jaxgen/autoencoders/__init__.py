"""Autoencoder family: DC-AE, Cosmos-style wavelet autoencoders."""
