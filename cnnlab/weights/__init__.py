"""Pretrained weights: reading a source, renaming foreign layouts, matching a model.

    source = read_source("runs/cifar-base")                        # a run, checkpoint, state dict, safetensors, URL
    report = match_state_dict(model, source.state, model_name="resnet20")   # what fits, what is new, what not
    load_matched(model, report)                                    # copy what fits, in place

Three modules, low to high:

- cnnlab.weights.layouts: `LAYOUTS`, the one table of foreign key layouts (torchvision, timm),
  and `FAMILIES`, the cnnlab models that read them; `to_cnnlab_names` picks a state dict's layout.
- cnnlab.weights.match: matching a state dict against a model by name and shape (`LoadReport`),
  the model's head (`head_modules`, never taken from a source), the first convolution folded over
  input channels, and `load_matched`. Tensors and names only.
- cnnlab.weights.sources: `read_source`, a `--pretrained SOURCE` read into a `Source` (its state
  dict and where it came from): run directories, checkpoints, state dicts, safetensors files, and
  URLs downloaded into cnnlab's cache and checked against a hash.

Training from a source (freezing, thawing, the report a run prints) is cnnlab.train.transfer.
"""

from cnnlab.weights.layouts import FAMILIES, LAYOUTS, to_cnnlab_names
from cnnlab.weights.match import (CONVOLUTIONS, STATISTICS_NORMS, LoadReport, head_keys, head_modules, load_matched,
                                  match_state_dict)
from cnnlab.weights.sources import Source, cached_path, read_source, split_source

__all__ = ["CONVOLUTIONS", "FAMILIES", "LAYOUTS", "LoadReport", "STATISTICS_NORMS", "Source", "cached_path",
           "head_keys", "head_modules", "load_matched", "match_state_dict", "read_source", "split_source",
           "to_cnnlab_names"]
