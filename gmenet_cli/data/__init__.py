"""Datasets in, prepared HR/LR stores out (`prepare`), and the loaders that training reads them with."""
