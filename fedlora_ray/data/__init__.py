"""Datasets (the embedded WordNet default) and client partitioners."""

from fedlora_ray.data.partition import partition_indices
from fedlora_ray.data.text import TextDataset
from fedlora_ray.data.wordnet import load_wordnet

__all__ = ["TextDataset", "load_wordnet", "partition_indices"]
