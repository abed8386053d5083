"""The Ray runtime: the only package that imports ray. jobs -> actors -> fedlora_ray."""
