"""Parameter initialisers.

He/Kaiming initialisation (He et al., 2015) keeps the variance of activations constant through ReLU
layers: weights ~ N(0, 2 / fan). torchvision's ResNets use the fan-out variant for convolutions, and we
follow it so that a model trained here starts from the same distribution as a torchvision one.
"""

import flax.linen as nn

# Var[w] = 2 / fan_out, fan_out = kernel_h * kernel_w * out_channels (torchvision's `kaiming_normal_`
# with mode="fan_out", nonlinearity="relu"; untruncated normal).
he_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

# Var[w] = 2 / fan_in: preserves the forward activation variance through ReLU (`kaiming_normal_` default).
he_normal_fan_in = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
