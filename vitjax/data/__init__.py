"""Data: decoding and the family's preprocessing (``images``), dataset readers and the images of a run
(``datasets``: Caltech101, class folders, annotations), class names (``labels``), and padded, sharded
batches (``batching``). Also the bundled ImageNet label files (``imagenet1k.txt``, ``imagenet21k.txt``)."""
