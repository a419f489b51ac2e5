"""Building exported models beyond one trial: in-graph layers, linear heads, ensembles of backbones."""
