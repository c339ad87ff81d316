"""Input pipelines: grain over TFDS sources, the embedded shapes dataset, folders, arrays."""
